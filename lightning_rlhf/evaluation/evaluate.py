"""Generate from each policy on the same held-out prompts and measure reward, KL and diversity."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from lightning_rlhf.data import IMDBDataModule
from lightning_rlhf.errors import ConfigError
from lightning_rlhf.evaluation.metrics import distinct_n, mean_ci95
from lightning_rlhf.generation import decode_responses, encode_prompts, sample_responses
from lightning_rlhf.models.forward import response_logits
from lightning_rlhf.models.loading import load_causal_lm, load_tokenizer
from lightning_rlhf.rewards import SentimentClassifierReward
from lightning_rlhf.rl.logprobs import logprobs_from_logits
from lightning_rlhf.rl.masking import response_mask_after_stop


@dataclass
class PolicyResult:
    """Figures of one policy and its per-prompt responses and rewards."""

    name: str
    figures: dict[str, float | list[float] | int | None]
    responses: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)


def held_out_prompts(data_path: str, tokenizer: str, n: int, seed: int, prompt_min_tokens: int,
                     prompt_max_tokens: int, min_review_chars: int = 200) -> list[str]:
    """The first ``n`` prompts of the (seeded, shuffled) test split, as text."""
    dm = IMDBDataModule(data_path=data_path, tokenizer=tokenizer, shape="prompts", seed=seed,
                        val_size=10, max_train_samples=10, max_eval_samples=2 * n + 100,
                        prompt_min_tokens=prompt_min_tokens, prompt_max_tokens=prompt_max_tokens,
                        min_review_chars=min_review_chars)
    dm.setup("test")
    if "test" not in dm.splits:
        raise ConfigError(f"'{data_path}' has no test split to draw held-out prompts from")
    rows = dm.splits["test"]["input_ids"][:n]
    if len(rows) < n:
        raise ConfigError(f"only {len(rows)} held-out prompts are available, {n} were asked for")
    return [dm.tokenizer.decode(ids, skip_special_tokens=True) for ids in rows]


def load_judge(path: str | None, positive_label: str = "POSITIVE") -> SentimentClassifierReward | None:
    """The gold judge (a sentiment classifier export), or None without a path."""
    return None if path is None else SentimentClassifierReward(path, positive_label, output="probability")


@torch.no_grad()
def evaluate_policy(name: str, path: str, ref: torch.nn.Module, reward, prompts: list[str],
                    max_new_tokens: int, temperature: float, batch_size: int, seed: int,
                    stop_at_eos: bool, device: torch.device,
                    judge: SentimentClassifierReward | None = None,
                    compile_generation: bool = False) -> PolicyResult:
    """Sample one response per prompt and measure it against the reference, the reward and,
    if given, a gold ``judge`` the policy never trained against.

    ``kl_to_reference`` is the mean over prompts of the sequence-level KL(pi || pi_ref) estimated
    from the samples: sum over response tokens of log pi - log pi_ref, both at ``temperature``
    (the distributions the policy is sampled from). ``compile_generation`` samples with the
    compiled decode step (same tokens; it pays off only for many batches of one shape)."""
    tok = load_tokenizer(path)
    model = load_causal_lm(path).to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = tok.eos_token_id if stop_at_eos else None
    responses, kl, nll, n_tokens, lengths = [], [], 0.0, 0, []
    for start in tqdm(range(0, len(prompts), batch_size), desc=f"generating ({name})"):
        enc = encode_prompts(tok, prompts[start: start + batch_size], device)
        out = sample_responses(model, enc["input_ids"], enc["attention_mask"], max_new_tokens,
                               temperature, generator, eos, tok.pad_token_id, compile_generation=compile_generation)
        mask = response_mask_after_stop(out, eos)
        ids = torch.cat([enc["input_ids"], out], -1)
        full_mask = torch.cat([enc["attention_mask"], mask], -1)
        r = out.shape[1]
        logp = logprobs_from_logits(response_logits(model, ids, full_mask, r), out, temperature)
        ref_logits = response_logits(ref, ids, full_mask, r)  # one forward for the KL and the perplexity
        ref_logp = logprobs_from_logits(ref_logits, out, temperature)
        kl.extend(((logp - ref_logp) * mask).sum(-1).tolist())
        nll -= float((logprobs_from_logits(ref_logits, out, 1.0) * mask).sum())
        n_tokens += int(mask.sum())
        lengths.extend(mask.sum(-1).tolist())
        responses.extend(decode_responses(tok, out, mask, after=(enc["input_ids"], enc["attention_mask"])))
    figures, scores = text_figures(prompts, responses, reward, judge)
    figures |= {
        "kl_to_reference": sum(kl) / len(kl),
        "perplexity_under_reference": float(torch.exp(torch.tensor(nll / max(1, n_tokens)))),
        "mean_length_tokens": sum(lengths) / len(lengths),
    }
    return PolicyResult(name, figures, responses, scores)


def text_figures(prompts: list[str], responses: list[str], reward,
                 judge: SentimentClassifierReward | None = None,
                 scores: list[float] | None = None) -> tuple[dict, list[float]]:
    """Reward mean with its 95% interval, positive rate, diversity and the gold judge's verdict
    of one response per prompt; also returns the per-response rewards (``scores``, when the
    caller already has them, are used instead of scoring again)."""
    if scores is None:
        scores = reward(prompts, responses).tolist()
    positive = None
    if isinstance(reward, SentimentClassifierReward):
        positive = float((reward.positive_probability(prompts, responses) > 0.5).float().mean())
    mean, lo, hi = mean_ci95(scores)
    figures = {"n": len(prompts), "reward_mean": mean, "reward_ci95": [lo, hi], "positive_rate": positive,
               "distinct_1": distinct_n(responses, 1), "distinct_2": distinct_n(responses, 2)}
    if judge is not None:
        gold = judge.positive_probability(prompts, responses)
        figures |= {"gold_positive_probability": float(gold.mean()),
                    "gold_positive_rate": float((gold > 0.5).float().mean())}
    return figures, scores


def evaluate_policies(policies: dict[str, str], reference: str, reward, prompts: list[str],
                      max_new_tokens: int = 24, temperature: float = 0.7, batch_size: int = 64,
                      seed: int = 0, stop_at_eos: bool = False, device: str = "cpu",
                      judge: SentimentClassifierReward | None = None,
                      compile_generation: bool = False) -> list[PolicyResult]:
    """Evaluate every ``name -> export folder`` in ``policies`` against one reference."""
    dev = torch.device(device)
    if judge is not None:
        judge.to(dev)
    ref_tok = load_tokenizer(reference)
    ref = load_causal_lm(reference).to(dev).eval()
    if isinstance(reward, torch.nn.Module):
        reward.to(dev)
    results = []
    for name, path in policies.items():
        if len(load_tokenizer(path)) != len(ref_tok):
            raise ConfigError(f"policy '{name}' ({path}) and the reference ({reference}) use different "
                              f"tokenizers, so their log-probs (KL) cannot be compared")
        results.append(evaluate_policy(name, path, ref, reward, prompts, max_new_tokens, temperature,
                                       batch_size, seed, stop_at_eos, dev, judge, compile_generation))
    return results
