"""Steps 1-4 of a policy-gradient iteration: sample, score, log-probs (and values), advantages.

One rollout path for every estimator: PPO's GAE with a value head, and the critic-free ones
(``rl.estimators``), which sample ``samples_per_prompt`` responses per prompt and, for ReMax,
one greedy response per prompt as the baseline. No Trainer: the models, the settings and the
generator are arguments.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lightning_rlhf.distributed import gather_flat
from lightning_rlhf.engine.config import EngineConfig
from lightning_rlhf.engine.dynamic import Drawn, dynamic_draw
from lightning_rlhf.generation import decode_with_prompts, kept_tokens, sample_responses
from lightning_rlhf.models.value_head import PolicyWithValueHead, policy_outputs, response_logprobs
from lightning_rlhf.rewards import ScoreNormalizer
from lightning_rlhf.rl.experience import build_rollout
from lightning_rlhf.rl.kl import kl_estimate
from lightning_rlhf.rl.logprobs import logprob_mismatch
from lightning_rlhf.rl.masking import missing_eos, response_mask_after_stop
from lightning_rlhf.rl.reward_transforms import best_of_first, transform_scores
from lightning_rlhf.rl.rollout import Rollout

PolicyOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


@dataclass
class RolloutModels:
    """What a rollout samples from, scores with and compares against.

    Attributes:
        policy: the trained policy (``policy.lm`` samples) and its value head, if any.
        ref_model: the frozen reference; None means the policy with its LoRA adapter disabled.
        anchor: J-BOND's EMA anchor, or None; with it the reward's KL is taken to the anchor.
        tokenizer: the policy's tokenizer (pad and EOS ids, decoding for the reward).
        reward: ``(prompts, responses) -> (n,)`` scores of the decoded texts.
        score_norm: the score normaliser (fitted on the first batch, over all ranks).
        reward_module: the reward classifier behind ``reward``, if it is a model (None for a function).
    """

    policy: PolicyWithValueHead
    ref_model: PreTrainedModel | None
    anchor: PreTrainedModel | None
    tokenizer: PreTrainedTokenizerBase
    reward: Callable[[list[str], list[str]], torch.Tensor]
    score_norm: ScoreNormalizer
    reward_module: torch.nn.Module | None = None


def is_finite(ro: Rollout) -> bool:
    """Whether this rank's scores, KL and values (where there are some) are all finite."""
    return all(bool(torch.isfinite(x).all()) for x in (ro.scores, ro.kl, ro.values) if x is not None)


def clock(device: torch.device) -> float:
    """Wall time that includes queued GPU work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def score_responses(models: RolloutModels, cfg: EngineConfig, queries: torch.Tensor, query_mask: torch.Tensor,
                    responses: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(n,) scores of the decoded prompt + response texts, after the missing-EOS penalty and the
    score normalisation (fitted on the first batch, over all ranks)."""
    tok, s = models.tokenizer, cfg.sampling
    prompts, texts = decode_with_prompts(tok, kept_tokens(queries, query_mask), kept_tokens(responses, response_mask))
    scores = models.reward(prompts, texts).to(queries.device)
    if s.stop_at_eos and cfg.reward.missing_eos_penalty is not None:
        missing = missing_eos(responses, response_mask, tok.eos_token_id, s.response_max_tokens)
        scores = scores - cfg.reward.missing_eos_penalty * missing.float()
    if models.score_norm.enabled and not models.score_norm.fitted:
        models.score_norm.fit(gather_flat(scores))
    return models.score_norm(scores)


def draw_lengths(cfg: EngineConfig, rows: int, gen: torch.Generator, device: torch.device) -> torch.Tensor | None:
    """(rows,) response lengths drawn from [response_min_tokens, response_max_tokens], or None for a fixed length."""
    s = cfg.sampling
    if s.response_min_tokens == s.response_max_tokens:
        return None
    return torch.randint(s.response_min_tokens, s.response_max_tokens + 1, (rows,), device=device, generator=gen)


def _sample(model: PreTrainedModel, cfg: EngineConfig, tok: PreTrainedTokenizerBase, queries: torch.Tensor,
            query_mask: torch.Tensor, gen: torch.Generator | None, k: int, **kwargs):
    s = cfg.sampling
    eos = tok.eos_token_id if s.stop_at_eos else None
    return sample_responses(model, queries, query_mask, s.response_max_tokens, s.temperature, gen, eos,
                            tok.pad_token_id, samples_per_prompt=k, compile_generation=s.compile_generation, **kwargs)


def _cut(cfg: EngineConfig, tok: PreTrainedTokenizerBase, responses: torch.Tensor, lengths: torch.Tensor | None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Responses padded after their stop (EOS or drawn length) and their (n, r) mask."""
    eos = tok.eos_token_id if cfg.sampling.stop_at_eos else None
    mask = response_mask_after_stop(responses, eos, lengths)
    return responses.masked_fill(mask == 0, tok.pad_token_id), mask


def reference_samples(models: RolloutModels, cfg: EngineConfig, queries: torch.Tensor, query_mask: torch.Tensor,
                      gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """m = ``reference_samples_per_prompt`` samples per prompt from the model the reward transform
    compares with (the EMA anchor if there is one, else the frozen reference), scored like the
    policy's samples.

    Args:
        queries, query_mask: (b, q) left-padded prompts.
    Returns:
        (b * m, r) responses, their (b * m, r) mask and (b, m) scores.
    """
    m = cfg.reward.reference_samples_per_prompt
    model = models.anchor if models.anchor is not None else models.ref_model
    responses = _sample(model, cfg, models.tokenizer, queries, query_mask, gen, m)
    responses, mask = _cut(cfg, models.tokenizer, responses, draw_lengths(cfg, responses.shape[0], gen,
                                                                           queries.device))
    scores = score_responses(models, cfg, queries.repeat_interleave(m, 0), query_mask.repeat_interleave(m, 0),
                             responses, mask)
    return responses, mask, scores.view(-1, m)


def draw_scored(models: RolloutModels, cfg: EngineConfig, prompts: torch.Tensor, prompt_mask: torch.Tensor,
                gen: torch.Generator, timings: dict[str, float]) -> Drawn:
    """k = ``samples_per_prompt`` policy samples for each of the (p, q) prompts, cut at their stop,
    with the sampler's log-probs and the scores; adds the wall times to ``time/generate`` and
    ``time/score``."""
    device, tok, k = prompts.device, models.tokenizer, cfg.sampling.samples_per_prompt
    t0 = clock(device)
    responses, sampler_logprobs = _sample(models.policy.lm, cfg, tok, prompts, prompt_mask, gen, k,
                                          return_logprobs=True)
    queries, query_mask = prompts.repeat_interleave(k, 0), prompt_mask.repeat_interleave(k, 0)
    lengths = draw_lengths(cfg, queries.shape[0], gen, device)
    responses, response_mask = _cut(cfg, tok, responses, lengths)
    t1 = clock(device)
    scores = score_responses(models, cfg, queries, query_mask, responses, response_mask)
    timings["time/generate"] = timings.get("time/generate", 0.0) + t1 - t0
    timings["time/score"] = timings.get("time/score", 0.0) + clock(device) - t1
    return Drawn(prompts, prompt_mask, responses, response_mask, sampler_logprobs * response_mask, scores, lengths)


@torch.no_grad()
def collect_rollout(models: RolloutModels, cfg: EngineConfig, queries: torch.Tensor, query_mask: torch.Tensor,
                    kl_coef: float, gen: torch.Generator, timings: dict[str, float],
                    refill: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
                    ) -> tuple[Rollout, PolicyOutputs | None]:
    """Sample ``samples_per_prompt`` responses for each of the b prompts and build the rollout.

    ``kl_coef`` is the KL coefficient in the reward (0 when the KL is not there). ``timings``
    receives the phases' wall times and ``rollout/logprob_diff_mean``/``_max``: how far the
    sampler's log-probs of the sampled tokens are from the trainer's forward.

    When ``cfg.fuses_first_forward`` (one mini-batch, no micro-batching), the policy forward that
    gives the rollout's log-probs (and values) keeps its graph and is reused by the first update
    (one forward fewer per iteration); it is returned as ``(logprobs, entropy, values)``, else None.

    With ``dynamic_sampling``, zero-std groups are replaced by groups of prompts from ``refill``
    (``n -> (n, q')`` prompts; None re-draws the same prompts), see ``engine.dynamic``.

    Args:
        queries, query_mask: (b, q) left-padded prompts.
    Returns:
        A ``Rollout`` of n = b * k rows, the k samples of a prompt in consecutive rows.
    """
    s, device, tok = cfg.sampling, queries.device, models.tokenizer
    k = s.samples_per_prompt

    def draw(prompts: torch.Tensor, prompt_mask: torch.Tensor) -> Drawn:
        return draw_scored(models, cfg, prompts, prompt_mask, gen, timings)

    if s.dynamic_sampling:
        drawn, counts = dynamic_draw(draw, queries, query_mask, k, s.dynamic_sampling_tries, tok.pad_token_id,
                                     refill)
        timings.update(counts)
    else:
        drawn = draw(queries, query_mask)
    prompt_ids, prompt_mask = drawn.prompts, drawn.prompt_mask
    queries, query_mask = prompt_ids.repeat_interleave(k, 0), prompt_mask.repeat_interleave(k, 0)
    responses, response_mask, sampler_logprobs = drawn.responses, drawn.response_mask, drawn.sampler_logprobs
    scores, lengths = drawn.scores, drawn.lengths
    t2 = t_ref = clock(device)
    demos = demo_mask = None
    if cfg.reward.reward_transform != "none":
        ref_responses, ref_mask, ref_scores = reference_samples(models, cfg, prompt_ids, prompt_mask, gen)
        timings["reward/raw_score"] = float(scores.mean())
        scores = transform_scores(cfg.reward.reward_transform, scores, ref_scores)
        if cfg.reward.jeffreys_beta < 1:
            m = cfg.reward.reference_samples_per_prompt
            best = best_of_first(ref_scores, cfg.reward.bon_n or 2) + torch.arange(len(prompt_ids), device=device) * m
            demos, demo_mask = ref_responses[best].repeat_interleave(k, 0), ref_mask[best].repeat_interleave(k, 0)
        t_ref = clock(device)
        timings["time/reference"] = t_ref - t2
    greedy_scores = None
    if cfg.advantages.advantage_estimator == "remax":
        greedy = _sample(models.policy.lm, cfg, tok, prompt_ids, prompt_mask, None, 1, greedy=True)
        eos = tok.eos_token_id if s.stop_at_eos else None
        greedy_mask = response_mask_after_stop(greedy, eos, None if lengths is None else lengths[::k])
        greedy_scores = score_responses(models, cfg, prompt_ids, prompt_mask, greedy, greedy_mask).repeat_interleave(k)
    t_baseline = clock(device)
    if greedy_scores is not None:
        timings["time/baseline"] = t_baseline - t_ref

    input_ids = torch.cat([queries, responses], dim=-1)
    mask = torch.cat([query_mask, response_mask], dim=-1)
    micro, first = cfg.update.micro_batch_size, None
    if cfg.fuses_first_forward(len(queries)):
        with torch.enable_grad():
            first = policy_outputs(models.policy, input_ids, mask, responses, s.temperature,
                                   cfg.update.entropy_coef > 0)
        logprobs, values = first[0].detach(), None if first[2] is None else first[2].detach()
    else:
        logprobs, values = response_logprobs(models.policy, input_ids, mask, responses, s.temperature, micro)
    ref_model = models.ref_model if models.ref_model is not None else models.policy.lm
    ref_logprobs, _ = response_logprobs(ref_model, input_ids, mask, responses, s.temperature, micro,
                                        disable_adapter=models.ref_model is None)
    if models.anchor is not None:
        # the reward's KL is to the anchor; the frozen reference's is logged as objective/kl_ref
        kl_ref = (kl_estimate(logprobs, ref_logprobs, "k1") * response_mask).sum(-1).mean()
        timings["objective/kl_ref"] = float(kl_ref)
        ref_logprobs, _ = response_logprobs(models.anchor, input_ids, mask, responses, s.temperature, micro)
    t3 = clock(device)
    timings["time/forward"] = t3 - t_baseline
    diff_mean, diff_max = logprob_mismatch(sampler_logprobs, logprobs, response_mask)
    timings.update({"rollout/logprob_diff_mean": float(diff_mean), "rollout/logprob_diff_max": float(diff_max)})
    a = cfg.advantages
    ro = build_rollout(queries, query_mask, responses, response_mask, logprobs, ref_logprobs, values,
                       scores, kl_coef, a.kl_estimator, a.gamma, a.lam, a.whiten_rewards,
                       a.advantage_estimator, k, greedy_scores, a.scale_rewards, sampler_logprobs)
    return ro._replace(demos=demos, demo_mask=demo_mask), first
