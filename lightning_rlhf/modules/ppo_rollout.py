"""Steps 1-4 of a policy-gradient iteration: sample, score, log-probs (and values), advantages.

One rollout path for every estimator: PPO's GAE with a value head, and the critic-free ones
(``rl.estimators``), which sample ``samples_per_prompt`` responses per prompt and, for ReMax,
one greedy response per prompt as the baseline.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from lightning_rlhf.distributed import gather_flat
from lightning_rlhf.generation import decode_responses, sample_responses
from lightning_rlhf.models.value_head import response_logprobs
from lightning_rlhf.modules.ppo_update import policy_outputs
from lightning_rlhf.rl.experience import build_rollout
from lightning_rlhf.rl.kl import kl_estimate
from lightning_rlhf.rl.logprobs import logprob_mismatch
from lightning_rlhf.rl.masking import missing_eos, response_mask_after_stop
from lightning_rlhf.rl.reward_transforms import best_of_first, transform_scores
from lightning_rlhf.rl.rollout import Rollout

PolicyOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def clock(device: torch.device) -> float:
    """Wall time that includes queued GPU work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def score_responses(module: L.LightningModule, queries: torch.Tensor, query_mask: torch.Tensor,
                    responses: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(n,) scores of the decoded prompt + response texts, after the missing-EOS penalty and the
    score normalisation (fitted on the first batch, over all ranks)."""
    hp, tok = module.hparams, module.tokenizer
    prompts = decode_responses(tok, queries, query_mask)
    texts = decode_responses(tok, responses, response_mask)
    scores = module.reward_call(prompts, texts).to(module.device)
    if hp.stop_at_eos and hp.missing_eos_penalty is not None:
        missing = missing_eos(responses, response_mask, tok.eos_token_id, hp.response_max_tokens)
        scores = scores - hp.missing_eos_penalty * missing.float()
    if module.score_norm.enabled and not module.score_norm.fitted:
        module.score_norm.fit(gather_flat(scores))
    return module.score_norm(scores)


def _lengths(module: L.LightningModule, rows: int, gen: torch.Generator) -> torch.Tensor | None:
    """(rows,) response lengths drawn from [response_min_tokens, response_max_tokens], or None for a fixed length."""
    hp = module.hparams
    if hp.response_min_tokens == hp.response_max_tokens:
        return None
    return torch.randint(hp.response_min_tokens, hp.response_max_tokens + 1, (rows,), device=module.device,
                         generator=gen)


def reference_samples(module: L.LightningModule, queries: torch.Tensor, query_mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """m = ``reference_samples_per_prompt`` samples per prompt from the model the reward transform
    compares with (the EMA anchor with ``anchor_ema`` > 0, else the frozen reference), scored
    like the policy's samples.

    Args:
        queries, query_mask: (b, q) left-padded prompts.
    Returns:
        (b * m, r) responses, their (b * m, r) mask and (b, m) scores.
    """
    hp, tok, gen = module.hparams, module.tokenizer, module._generator()
    m = hp.reference_samples_per_prompt
    model = module.anchor if module.anchor is not None else module.ref_model
    eos = tok.eos_token_id if hp.stop_at_eos else None
    responses = sample_responses(model, queries, query_mask, hp.response_max_tokens, hp.temperature, gen, eos,
                                 tok.pad_token_id, samples_per_prompt=m, compile_generation=hp.compile_generation)
    mask = response_mask_after_stop(responses, eos, _lengths(module, responses.shape[0], gen))
    responses = responses.masked_fill(mask == 0, tok.pad_token_id)
    scores = score_responses(module, queries.repeat_interleave(m, 0), query_mask.repeat_interleave(m, 0),
                             responses, mask)
    return responses, mask, scores.view(-1, m)


@torch.no_grad()
def collect_rollout(module: L.LightningModule, queries: torch.Tensor, query_mask: torch.Tensor,
                    timings: dict[str, float]) -> tuple[Rollout, PolicyOutputs | None]:
    """Sample ``samples_per_prompt`` responses for each of the b prompts and build the rollout.

    ``timings`` receives the phases' wall times and ``rollout/logprob_diff_mean``/``_max``: how
    far the sampler's log-probs of the sampled tokens are from the trainer's forward.

    With a single mini-batch and no micro-batching, the policy forward that gives the rollout's
    log-probs (and values) keeps its graph and is reused by the first update (one forward fewer
    per iteration); it is returned as ``(logprobs, entropy, values)``, else None.

    Args:
        queries, query_mask: (b, q) left-padded prompts.
    Returns:
        A ``Rollout`` of n = b * k rows, the k samples of a prompt in consecutive rows.
    """
    hp, tok, gen, device = module.hparams, module.tokenizer, module._generator(), module.device
    k = hp.samples_per_prompt
    eos = tok.eos_token_id if hp.stop_at_eos else None
    t0 = clock(device)
    responses, sampler_logprobs = sample_responses(module.policy.lm, queries, query_mask, hp.response_max_tokens,
                                                   hp.temperature, gen, eos, tok.pad_token_id, samples_per_prompt=k,
                                                   return_logprobs=True, compile_generation=hp.compile_generation)
    prompt_ids, prompt_mask = queries, query_mask
    if k > 1:
        queries, query_mask = queries.repeat_interleave(k, 0), query_mask.repeat_interleave(k, 0)
    lengths = _lengths(module, queries.shape[0], gen)
    response_mask = response_mask_after_stop(responses, eos, lengths)
    responses = responses.masked_fill(response_mask == 0, tok.pad_token_id)
    t1 = clock(device)
    scores = score_responses(module, queries, query_mask, responses, response_mask)
    t2 = t_ref = clock(device)
    demos = demo_mask = None
    if hp.reward_transform != "none":
        ref_responses, ref_mask, ref_scores = reference_samples(module, prompt_ids, prompt_mask)
        timings["reward/raw_score"] = float(scores.mean())
        scores = transform_scores(hp.reward_transform, scores, ref_scores)
        if hp.jeffreys_beta < 1:
            m = hp.reference_samples_per_prompt
            best = best_of_first(ref_scores, hp.bon_n or 2) + torch.arange(len(prompt_ids), device=device) * m
            demos, demo_mask = ref_responses[best].repeat_interleave(k, 0), ref_mask[best].repeat_interleave(k, 0)
        t_ref = clock(device)
        timings["time/reference"] = t_ref - t2
    greedy_scores = None
    if hp.advantage_estimator == "remax":
        greedy = sample_responses(module.policy.lm, prompt_ids, prompt_mask, hp.response_max_tokens,
                                  hp.temperature, None, eos, tok.pad_token_id, greedy=True,
                                  compile_generation=hp.compile_generation)
        greedy_mask = response_mask_after_stop(greedy, eos, None if lengths is None else lengths[::k])
        greedy_scores = score_responses(module, prompt_ids, prompt_mask, greedy, greedy_mask).repeat_interleave(k)
    t_baseline = clock(device)
    if greedy_scores is not None:
        timings["time/baseline"] = t_baseline - t_ref

    input_ids = torch.cat([queries, responses], dim=-1)
    mask = torch.cat([query_mask, response_mask], dim=-1)
    micro, first = hp.micro_batch_size, None
    if hp.fuse_first_forward and hp.num_mini_batches == 1 and (micro or len(queries)) >= len(queries):
        with torch.enable_grad():
            first = policy_outputs(module, input_ids, mask, responses)
        logprobs, values = first[0].detach(), None if first[2] is None else first[2].detach()
    else:
        logprobs, values = response_logprobs(module.policy, input_ids, mask, responses, hp.temperature, micro)
    ref_model = module.ref_model if module.ref_model is not None else module.policy.lm
    ref_logprobs, _ = response_logprobs(ref_model, input_ids, mask, responses, hp.temperature, micro,
                                        disable_adapter=module.ref_model is None)
    if module.anchor is not None:
        # the reward's KL is to the anchor; the frozen reference's is logged as objective/kl_ref
        kl_ref = (kl_estimate(logprobs, ref_logprobs, "k1") * response_mask).sum(-1).mean()
        timings["objective/kl_ref"] = float(kl_ref)
        ref_logprobs, _ = response_logprobs(module.anchor, input_ids, mask, responses, hp.temperature, micro)
    t3 = clock(device)
    timings.update({"time/generate": t1 - t0, "time/score": t2 - t1, "time/forward": t3 - t_baseline})
    diff_mean, diff_max = logprob_mismatch(sampler_logprobs, logprobs, response_mask)
    timings.update({"rollout/logprob_diff_mean": float(diff_mean), "rollout/logprob_diff_max": float(diff_max)})
    ro = build_rollout(queries, query_mask, responses, response_mask, logprobs, ref_logprobs, values,
                       scores, module.reward_kl_coef, hp.kl_estimator, hp.gamma, hp.lam, hp.whiten_rewards,
                       hp.advantage_estimator, k, greedy_scores)
    return ro._replace(demos=demos, demo_mask=demo_mask), first
