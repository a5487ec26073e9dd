"""Best-of-N from the SFT policy: sample n responses per prompt, keep the one the reward model
likes best. The baseline every trained policy should beat per nat of KL (Gao et al. 2022).

Its KL to the reference comes three ways (all nats per sequence, means over prompts):

* ``kl_bound``: ``log n - (n - 1) / n``, the figure the literature reports; an upper bound, exact
  only when no outcome of the reference carries probability mass (Beirami et al. 2024).
* ``kl_estimate``: Beirami et al.'s estimate from the reference probability of each selected
  response (``best_of_n_kl_estimate``); what the frontier plots.
* ``kl_empirical``: the exact KL of best-of-n when the reference's reward distribution is the
  empirical one of a prompt's candidates, ties kept as point masses (``empirical_best_of_n_kl``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from lightning_rlhf.evaluation.evaluate import PolicyResult, text_figures
from lightning_rlhf.generation import decode_responses, encode_prompts, sample_responses
from lightning_rlhf.models.forward import response_logits
from lightning_rlhf.models.loading import load_causal_lm, load_tokenizer
from lightning_rlhf.rewards import SentimentClassifierReward
from lightning_rlhf.rl.logprobs import logprobs_from_logits
from lightning_rlhf.rl.masking import response_mask_after_stop


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")


def best_of_n_kl_bound(n: int) -> float:
    """``log n - (n - 1) / n``: the KL(best-of-n || base) the literature reports, an upper bound
    on the true value (Beirami et al. 2024, arXiv 2401.01879, Theorem 3.1), reached when the
    reference's reward has no ties and no outcome has non-negligible probability (a continuum:
    ``best_of_n_kl_exact([1.0], [False], n)``). 0 at n = 1, 1.20 at n = 8, 3.17 at n = 64."""
    _check_n(n)
    return math.log(n) - (n - 1) / n


def _continuum_kl(u: float, n: int) -> float:
    """``G(u) = u^n (log n + (n-1) log u - (n-1)/n)``, the antiderivative of
    ``n u^(n-1) log(n u^(n-1))``: KL mass of best-of-n below reward quantile ``u`` of a continuum."""
    return 0.0 if u <= 0.0 else u ** n * (math.log(n) + (n - 1) * math.log(u) - (n - 1) / n)


def best_of_n_kl_exact(masses: Sequence[float], atoms: Sequence[bool], n: int) -> float:
    """KL(best-of-n || ref) exactly, for a reference described by its reward levels.

    Why: the bound and the estimate are both special cases, and this is the yardstick that tests
    them. Best-of-n keeps the maximum of n draws, so the reward CDF ``F`` becomes ``F^n``
    (Beirami et al. 2024, Section 2: ``pi_bon(y) = F(y)^n - F^-(y)^n`` for a level with strict
    CDF ``F^-``). A level is either

    * an atom of mass ``m`` (one response, or several tied in reward: ties go to any of them, so
      each keeps its share and the ratio ``pi_bon / ref`` is the level's): best-of-n gives it
      ``b = F^n - F^-^n`` and it adds ``b log(b / m)``; or
    * a continuum of mass ``m`` (rewards without ties, each response of negligible probability):
      the density ratio at quantile ``u`` is ``n u^(n-1)``, adding ``G(F) - G(F^-)`` with
      ``G(u) = u^n (log n + (n-1) log u - (n-1)/n)``.

    One continuum of mass 1 gives the bound ``log n - (n-1)/n``; a continuum of mass ``1 - eps``
    under a top atom of mass ``eps`` gives Beirami et al.'s ``KL_n(eps)``
    (``best_of_n_kl_estimate``); n equally likely atoms (no continuum) give less than both.

    Args:
        masses: (L,) reference probability of each level, in increasing reward; they sum to 1.
        atoms: (L,) whether each level is a point mass (True) or a continuum (False).
        n: candidates per prompt.
    """
    _check_n(n)
    if len(masses) != len(atoms) or any(m < 0 for m in masses) or not math.isclose(sum(masses), 1.0, abs_tol=1e-6):
        raise ValueError(f"masses must be L >= 0 probabilities summing to 1, one per atom flag; got {masses}")
    kl, below = 0.0, 0.0
    for mass, atom in zip(masses, atoms, strict=True):
        top = min(1.0, below + mass)
        if atom and mass > 0:
            picked = top ** n - below ** n
            kl += picked * math.log(picked / mass) if picked > 0 else 0.0
        elif not atom:
            kl += _continuum_kl(top, n) - _continuum_kl(below, n)
        below = top
    return kl


def best_of_n_kl_estimate(log_eps: torch.Tensor, n: int) -> torch.Tensor:
    """Beirami et al.'s estimate of KL(best-of-n || ref), one per prompt.

    ``KL_n(eps) = (1-eps)^n [log n + (n-1) log(1-eps) - (n-1)/n]
                 + (1 - (1-eps)^n) log[(1 - (1-eps)^n) / eps]``

    with ``eps = pi_ref(y | x)`` the reference probability of the response best-of-n selected
    (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy", arXiv
    2401.01879, Section 4 "Proposed estimator for KL divergence"). It is the exact KL of a
    reference that puts mass ``eps`` on the best outcome and spreads the rest over a continuum
    (``best_of_n_kl_exact([1 - eps, eps], [False, True], n)``): the first term is the continuum's
    ``G(1 - eps)``, the second the atom picked with probability ``1 - (1-eps)^n``. It is 0 at
    n = 1 or eps = 1 and tends to the bound as eps -> 0, from below: the gap is third order in
    eps (``eps^3 / 12`` at n = 2; at eps = 0.01 it is 1.6e-5 nats at n = 8 and 0.008 at n = 64),
    so sampled sentences of 24 tokens (eps ~ e^-30) sit on the bound to float precision and only
    responses the reference gives a percent or more move it visibly.

    Computed in float64 and in log space (``log1p``, ``expm1``), as eps of a sequence underflows.

    Args:
        log_eps: (P,) ``log pi_ref(y | x)`` of each prompt's selected response, summed over its
            tokens at the sampling temperature (the distribution best-of-n drew from).
        n: candidates per prompt.
    Returns:
        (P,) float64 KL estimates in nats.
    """
    _check_n(n)
    log_eps = log_eps.double().clamp(max=0.0)
    log_rest = torch.log1p(-torch.exp(log_eps))  # log(1 - eps); -inf at eps = 1
    log_a = n * log_rest  # log (1 - eps)^n
    a, picked = torch.exp(log_a), -torch.expm1(log_a)  # (1 - eps)^n and 1 - (1 - eps)^n
    zero = torch.zeros_like(log_eps)
    continuum = torch.where(a > 0, a * (math.log(n) + (n - 1) * log_rest - (n - 1) / n), zero)
    atom = torch.where(picked > 0, picked * (torch.log(picked) - log_eps), zero)
    return continuum + atom


def empirical_best_of_n_kl(scores: torch.Tensor, n: int) -> torch.Tensor:
    """The exact KL(best-of-n || ref) per prompt, with the reference's reward distribution taken
    from the prompt's candidates: a reward shared by k of the N candidates (a repeated response,
    or a tie) is an atom of mass k / N, and the rewards seen once are a continuum of mass 1 / N
    each (``best_of_n_kl_exact``).

    Why: it measures what ties do, from the samples. With N distinct rewards it is exactly the
    bound; ties (a reward model that saturates, a policy that repeats a response) lower it. It
    cannot see an outcome that is likely but was drawn once, which ``best_of_n_kl_estimate`` does.

    Args:
        scores: (P, N) reward of every candidate of each prompt (all N, not just the first n: the
            reference's CDF does not depend on n).
        n: candidates best-of-n chooses among.
    Returns:
        (P,) float64 KL in nats.
    """
    _check_n(n)
    out = []
    for row in scores.double():
        _, counts = torch.unique(row, sorted=True, return_counts=True)
        masses = (counts.double() / row.numel()).tolist()
        out.append(best_of_n_kl_exact(masses, (counts > 1).tolist(), n))
    return torch.tensor(out, dtype=torch.float64)


def select_best_of_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """(P,) index of the best of the first ``n`` candidates of each prompt.

    Args:
        scores: (P, N) reward of N candidates per prompt, N >= n; ties go to the earlier one.
    """
    if not 1 <= n <= scores.shape[1]:
        raise ValueError(f"n must be in [1, {scores.shape[1]}], got {n}")
    return scores[:, :n].argmax(-1)


@dataclass
class Candidates:
    """``n`` sampled responses per prompt and what best-of-n needs of each.

    Attributes:
        texts: P lists of n decoded responses.
        nll: (P, n) summed negative log-likelihood of each response under the sampling model at
            temperature 1 (for the perplexity).
        counts: (P, n) response tokens (after a stop token nothing counts).
        logprob: (P, n) summed log-probability of each response under the sampling model at the
            sampling temperature: ``log eps`` of ``best_of_n_kl_estimate``.
    """

    texts: list[list[str]]
    nll: torch.Tensor
    counts: torch.Tensor
    logprob: torch.Tensor


@torch.no_grad()
def sample_candidates(path: str, prompts: list[str], n: int, max_new_tokens: int, temperature: float,
                      batch_size: int, seed: int, stop_at_eos: bool, device: torch.device,
                      compile_generation: bool = False) -> Candidates:
    """``n`` samples per prompt from the policy at ``path``, with their log-likelihoods under it."""
    tok = load_tokenizer(path)
    model = load_causal_lm(path).to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = tok.eos_token_id if stop_at_eos else None
    texts: list[list[str]] = []
    nll, counts, logprob = [], [], []
    per_batch = max(1, batch_size // n)
    for start in tqdm(range(0, len(prompts), per_batch), desc=f"best-of-{n} candidates"):
        enc = encode_prompts(tok, prompts[start: start + per_batch], device)
        out = sample_responses(model, enc["input_ids"], enc["attention_mask"], max_new_tokens, temperature,
                               generator, eos, tok.pad_token_id, samples_per_prompt=n,
                               compile_generation=compile_generation)
        mask = response_mask_after_stop(out, eos)
        ids = torch.cat([enc["input_ids"].repeat_interleave(n, 0), out], -1)
        full_mask = torch.cat([enc["attention_mask"].repeat_interleave(n, 0), mask], -1)
        logits = response_logits(model, ids, full_mask, out.shape[1])  # one forward for both temperatures
        nll.append(-(logprobs_from_logits(logits, out, 1.0) * mask).sum(-1).view(-1, n))
        logprob.append((logprobs_from_logits(logits, out, temperature) * mask).sum(-1).view(-1, n))
        counts.append(mask.sum(-1).view(-1, n))
        flat = decode_responses(tok, out, mask, after=(ids[:, :-out.shape[1]], full_mask[:, :-out.shape[1]]))
        texts.extend(flat[i: i + n] for i in range(0, len(flat), n))
    return Candidates(texts, torch.cat(nll), torch.cat(counts), torch.cat(logprob))


def best_of_n_kl_figures(scores: torch.Tensor, logprob: torch.Tensor, pick: torch.Tensor, n: int) -> dict:
    """The three KL figures of one best-of-n point (means over prompts, nats per sequence);
    ``kl_to_reference``, the frontier's x-axis, is the estimate.

    Args:
        scores: (P, N) reward of every candidate.
        logprob: (P, N) log pi_ref of every candidate at the sampling temperature.
        pick: (P,) index of each prompt's selected candidate.
        n: candidates chosen among.
    """
    chosen = logprob.gather(1, pick.unsqueeze(1)).squeeze(1)  # (P,) log eps of the selected response
    estimate = float(best_of_n_kl_estimate(chosen, n).mean())
    return {"kl_to_reference": estimate, "kl_estimate": estimate, "kl_bound": best_of_n_kl_bound(n),
            "kl_empirical": float(empirical_best_of_n_kl(scores, n).mean())}


def best_of_n(path: str, reward, prompts: list[str], ns: list[int], max_new_tokens: int, temperature: float,
              batch_size: int, seed: int, stop_at_eos: bool = False, device: str = "cpu",
              judge: SentimentClassifierReward | None = None, compile_generation: bool = False
              ) -> list[PolicyResult]:
    """Evaluate best-of-n of the policy at ``path`` for every n in ``ns`` from one set of
    max(ns) candidates per prompt (best-of-n uses the first n), as ``evaluate_policy`` does a
    trained policy; ``kl_to_reference`` is the estimate ``kl_estimate``, beside ``kl_bound`` and
    ``kl_empirical`` (``best_of_n_kl_figures``)."""
    dev = torch.device(device)
    for module in (reward, judge):
        if isinstance(module, torch.nn.Module):
            module.to(dev)
    n_max = max(ns)
    cand = sample_candidates(path, prompts, n_max, max_new_tokens, temperature, batch_size, seed, stop_at_eos, dev,
                             compile_generation)
    flat_prompts = [p for p in prompts for _ in range(n_max)]
    scores = reward(flat_prompts, [t for row in cand.texts for t in row]).float().cpu().view(len(prompts), n_max)
    logprob, nll, counts = cand.logprob.cpu(), cand.nll.cpu(), cand.counts.cpu()
    results, rows = [], torch.arange(len(prompts))
    for n in sorted(ns):
        pick = select_best_of_n(scores, n)
        responses = [cand.texts[i][int(j)] for i, j in enumerate(pick)]
        figures, chosen = text_figures(prompts, responses, reward, judge, scores[rows, pick].tolist())
        n_tokens = counts[rows, pick].sum()
        figures |= {**best_of_n_kl_figures(scores, logprob, pick, n),
                    "perplexity_under_reference": float(torch.exp(nll[rows, pick].sum() / n_tokens.clamp(min=1))),
                    "mean_length_tokens": float(counts[rows, pick].float().mean())}
        results.append(PolicyResult(f"best-of-{n}", figures, responses, chosen))
    return results
