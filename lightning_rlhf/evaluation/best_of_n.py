"""Best-of-N from the SFT policy: sample n responses per prompt, keep the one the reward model
likes best. The baseline every trained policy should beat per nat of KL (Gao et al. 2022)."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from lightning_rlhf.evaluation.evaluate import PolicyResult, text_figures
from lightning_rlhf.generation import decode_responses, encode_prompts
from lightning_rlhf.models.forward import response_logits
from lightning_rlhf.models.loading import load_causal_lm, load_tokenizer
from lightning_rlhf.rewards import SentimentClassifierReward
from lightning_rlhf.rl.logprobs import logprobs_from_logits
from lightning_rlhf.rl.masking import response_mask_after_stop
from lightning_rlhf.rl.sampling import sample_responses


def best_of_n_kl_bound(n: int) -> float:
    """``log n - (n - 1) / n``: the KL(best-of-n || base) the literature reports, an upper bound
    on the true value (Beirami et al. 2024). 0 at n = 1, 1.20 at n = 8, 3.17 at n = 64."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def select_best_of_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """(P,) index of the best of the first ``n`` candidates of each prompt.

    Args:
        scores: (P, N) reward of N candidates per prompt, N >= n; ties go to the earlier one.
    """
    if not 1 <= n <= scores.shape[1]:
        raise ValueError(f"n must be in [1, {scores.shape[1]}], got {n}")
    return scores[:, :n].argmax(-1)


@torch.no_grad()
def sample_candidates(path: str, prompts: list[str], n: int, max_new_tokens: int, temperature: float,
                      batch_size: int, seed: int, stop_at_eos: bool, device: torch.device,
                      compile_generation: bool = False) -> tuple[list[list[str]], torch.Tensor, torch.Tensor]:
    """``n`` samples per prompt from the policy at ``path``.

    Returns the texts (P lists of n), and the (P, n) summed negative log-likelihood of each
    response under the same model at temperature 1 and its (P, n) token count (for perplexity).
    """
    tok = load_tokenizer(path)
    model = load_causal_lm(path).to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = tok.eos_token_id if stop_at_eos else None
    texts: list[list[str]] = []
    nll, counts = [], []
    per_batch = max(1, batch_size // n)
    for start in tqdm(range(0, len(prompts), per_batch), desc=f"best-of-{n} candidates"):
        enc = encode_prompts(tok, prompts[start: start + per_batch], device)
        out = sample_responses(model, enc["input_ids"], enc["attention_mask"], max_new_tokens, temperature,
                               generator, eos, tok.pad_token_id, samples_per_prompt=n,
                               compile_generation=compile_generation)
        mask = response_mask_after_stop(out, eos)
        ids = torch.cat([enc["input_ids"].repeat_interleave(n, 0), out], -1)
        full_mask = torch.cat([enc["attention_mask"].repeat_interleave(n, 0), mask], -1)
        logp = logprobs_from_logits(response_logits(model, ids, full_mask, out.shape[1]), out, 1.0)
        nll.append(-(logp * mask).sum(-1).view(-1, n))
        counts.append(mask.sum(-1).view(-1, n))
        flat = decode_responses(tok, out, mask)
        texts.extend(flat[i: i + n] for i in range(0, len(flat), n))
    return texts, torch.cat(nll), torch.cat(counts)


def best_of_n(path: str, reward, prompts: list[str], ns: list[int], max_new_tokens: int, temperature: float,
              batch_size: int, seed: int, stop_at_eos: bool = False, device: str = "cpu",
              judge: SentimentClassifierReward | None = None, compile_generation: bool = False
              ) -> list[PolicyResult]:
    """Evaluate best-of-n of the policy at ``path`` for every n in ``ns`` from one set of
    max(ns) candidates per prompt (best-of-n uses the first n), as ``evaluate_policy`` does a
    trained policy; ``kl_to_reference`` is the analytic bound, flagged by ``kl_is_bound``."""
    dev = torch.device(device)
    for module in (reward, judge):
        if isinstance(module, torch.nn.Module):
            module.to(dev)
    n_max = max(ns)
    texts, nll, counts = sample_candidates(path, prompts, n_max, max_new_tokens, temperature, batch_size,
                                           seed, stop_at_eos, dev, compile_generation)
    flat_prompts = [p for p in prompts for _ in range(n_max)]
    scores = reward(flat_prompts, [t for row in texts for t in row]).float().cpu().view(len(prompts), n_max)
    results, rows = [], torch.arange(len(prompts))
    for n in sorted(ns):
        pick = select_best_of_n(scores, n)
        responses = [texts[i][int(j)] for i, j in enumerate(pick)]
        figures, chosen = text_figures(prompts, responses, reward, judge, scores[rows, pick].tolist())
        n_tokens = counts[rows, pick].sum()
        figures |= {"kl_to_reference": best_of_n_kl_bound(n), "kl_is_bound": True,
                    "perplexity_under_reference": float(torch.exp(nll[rows, pick].sum() / n_tokens.clamp(min=1))),
                    "mean_length_tokens": float(counts[rows, pick].float().mean())}
        results.append(PolicyResult(f"best-of-{n}", figures, responses, chosen))
    return results
