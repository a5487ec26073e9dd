"""Critic-free advantage estimators: a baseline from the other samples of the same prompt (or
from a greedy response) instead of a learned value function.

A rollout of b prompts with k samples each holds n = b * k rows, the k samples of a prompt in
consecutive rows (``repeat_interleave`` order), so ``x.view(b, k)`` groups them. Notation of
the papers in the table: r_i the score of sample i of a group, r̄ the group
mean, σ the group's (unbiased) std.

| estimator | advantage | k |
|---|---|---|
| ``rloo`` (Ahmadian et al. 2024) | r_i − mean of the other k − 1 scores | ≥ 2 |
| ``grpo`` (DeepSeekMath 2024) | (r_i − r̄) / (σ + eps) | ≥ 2 |
| ``dr_grpo`` (Liu et al. 2025) | r_i − r̄ (and a constant loss divisor) | ≥ 2 |
| ``reinforce_pp`` (Hu et al. 2025) | per-token return of (score − β KL), whitened over the global batch | ≥ 1 |
| ``reinforce_pp_baseline`` | the same with r̄ subtracted from the score first (so discounted with it) | ≥ 2 |
| ``remax`` (Li et al. 2023) | per-token return − the score of a greedy response to the prompt | ≥ 1 |

Sequence-level estimators (``rloo``, ``grpo``, ``dr_grpo``) broadcast one advantage to every
token; with the KL in the reward (β = ``kl_coef``, KL_i a sequence's summed KL, no gradient):
``rloo`` and ``dr_grpo`` fold it into the score first (TRL's RLOO; both are linear in the score,
so the KL gets the same baseline as the score), while ``grpo`` normalises the scores and then
subtracts the KL unscaled, with the same group baseline: A_i = (r_i − r̄)/(σ + eps) − β·(KL_i − KL̄),
KL̄ the group's mean (OpenRLHF's ``group_norm`` likewise normalises the scores before the KL is
added). Folding the KL in first would weigh it by β/σ, so a group of near-equal scores would get
unit-variance advantages that are mostly KL noise; subtracting it without the baseline makes
every advantage of a high-KL group negative, and on the offline task that pushed the KL to 23-26
nats (docs/results.md, "Correctness round two").
Token-level ones (``reinforce_pp*``, ``remax``) take per-token rewards: −β KL on each token and
the score on the last.
"""

from __future__ import annotations

from typing import Literal

import torch

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.advantages import _global_moments, masked_whiten, per_token_rewards

Estimator = Literal["gae", "rloo", "grpo", "dr_grpo", "reinforce_pp", "reinforce_pp_baseline", "remax"]
ESTIMATORS = ("gae", "rloo", "grpo", "dr_grpo", "reinforce_pp", "reinforce_pp_baseline", "remax")
SEQUENCE_LEVEL = ("rloo", "grpo", "dr_grpo")
GROUP_BASELINE = ("rloo", "grpo", "dr_grpo", "reinforce_pp_baseline")
ScaleRewards = Literal["group", "batch", "none"]
SCALE_REWARDS = ("group", "batch", "none")


def check_estimator(estimator: str, samples_per_prompt: int) -> None:
    """Refuse an unknown estimator, or a group estimator with fewer than two samples per prompt."""
    if estimator not in ESTIMATORS:
        raise ConfigError(f"advantage_estimator must be one of {', '.join(ESTIMATORS)}, not '{estimator}'")
    if samples_per_prompt < 1:
        raise ConfigError(f"samples_per_prompt must be at least 1, not {samples_per_prompt}")
    if estimator in GROUP_BASELINE and samples_per_prompt < 2:
        raise ConfigError(f"advantage_estimator '{estimator}' compares the samples of a prompt with each other; "
                          f"set samples_per_prompt to 2 or more (it is {samples_per_prompt})")


def _groups(scores: torch.Tensor, k: int) -> torch.Tensor:
    if scores.dim() != 1 or scores.numel() % k:
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not split into groups of {k}")
    return scores.view(-1, k)


def rloo_advantages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Leave-one-out baseline: ``A_i = r_i - (sum_j r_j - r_i) / (k - 1)``.

    Args:
        scores: (b * k,) sequence scores, groups in consecutive rows.
    Returns:
        (b * k,) advantages; each group's sum is 0.
    """
    if k < 2:
        raise ConfigError("rloo needs at least 2 samples per prompt")
    g = _groups(scores, k)
    baseline = (g.sum(-1, keepdim=True) - g) / (k - 1)
    return (g - baseline).reshape(-1)


def grpo_advantages(scores: torch.Tensor, k: int, scale_by_std: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantage: ``(r_i - mean) / (std + eps)``; ``scale_by_std=False`` is Dr. GRPO.

    The std is unbiased (``torch.std``, as TRL and verl); ``eps`` (TRL's 1e-4) keeps a group
    whose samples all score the same at advantage 0.

    Args:
        scores: (b * k,) sequence scores, groups in consecutive rows.
    Returns:
        (b * k,) advantages.
    """
    if k < 2:
        raise ConfigError("grpo and dr_grpo need at least 2 samples per prompt")
    g = _groups(scores, k)
    centred = g - g.mean(-1, keepdim=True)
    if scale_by_std:
        centred = centred / (g.std(-1, keepdim=True) + eps)
    return centred.reshape(-1)


def group_mean_baseline(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(b * k,) mean score of each row's group (REINFORCE++-baseline's baseline)."""
    return _groups(scores, k).mean(-1, keepdim=True).expand(-1, k).reshape(-1)


def group_statistics(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean within-group std of the scores and the fraction of groups whose std is 0 (TRL's
    ``frac_reward_zero_std``: groups that teach a group-relative estimator nothing)."""
    if k < 2:
        zero = torch.zeros((), device=scores.device)
        return zero, zero
    std = _groups(scores, k).std(-1)
    return std.mean(), (std == 0).float().mean()


def returns_to_go(rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``G_t = sum_{s >= t} gamma^(s - t) r_s`` over the response.

    Args:
        rewards, response_mask: (n, r).
    Returns:
        (n, r) returns, 0 where masked.
    """
    rewards = rewards * response_mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out * response_mask


def reinforce_pp_advantages(
    rewards: torch.Tensor,
    response_mask: torch.Tensor,
    baseline: torch.Tensor | None = None,
    gamma: float = 1.0,
    sync: bool = True,
) -> torch.Tensor:
    """REINFORCE++: per-token returns of the rewards, an optional per-sequence baseline taken off
    the score first, whitened over the global batch (all ranks when ``sync`` and a process group
    runs).

    Args:
        rewards: (n, r) per-token rewards (−β KL, plus the score on the last token).
        response_mask: (n, r).
        baseline: (n,) subtracted from each sequence's score, i.e. from the reward of its last
            token, before the returns: token t's return loses gamma^(T - t) * baseline
            (``group_mean_baseline`` for REINFORCE++-baseline, as OpenRLHF's
            ``reinforce_baseline``); None for plain REINFORCE++.
    Returns:
        (n, r) advantages, 0 where masked.
    """
    if baseline is not None:
        rewards = rewards + per_token_rewards(-baseline, torch.zeros_like(rewards), 0.0, response_mask)
    returns = returns_to_go(rewards, response_mask, gamma)
    return masked_whiten(returns, response_mask, sync=sync)


def remax_advantages(
    rewards: torch.Tensor, response_mask: torch.Tensor, greedy_scores: torch.Tensor, gamma: float = 1.0
) -> torch.Tensor:
    """ReMax: per-token returns minus the score of the greedy response to the same prompt.

    Args:
        rewards, response_mask: (n, r), as for ``reinforce_pp_advantages``.
        greedy_scores: (n,) score of the greedy response of each row's prompt.
    Returns:
        (n, r) advantages, 0 where masked (not whitened).
    """
    returns = returns_to_go(rewards, response_mask, gamma)
    return (returns - greedy_scores.unsqueeze(-1)) * response_mask


def sequence_kl_advantages(estimator: str, scores: torch.Tensor, kl: torch.Tensor, kl_coef: float,
                           k: int, scale_rewards: ScaleRewards = "group") -> torch.Tensor:
    """(n,) advantages of ``rloo``/``grpo``/``dr_grpo`` with a KL penalty (module docstring).

    Args:
        scores: (n,) sequence scores; kl: (n,) each sequence's summed KL; kl_coef: β.
        scale_rewards: ``grpo`` only: the std its scores are divided by (``scaled_group_advantages``).
    """
    if estimator == "grpo":
        return scaled_group_advantages(scores, k, scale_rewards) - kl_coef * (kl - group_mean_baseline(kl, k))
    return sequence_advantages(estimator, scores - kl_coef * kl, k)


def sequence_advantages(estimator: str, scores: torch.Tensor, k: int) -> torch.Tensor:
    """(n,) advantage of each sequence from its score for ``rloo``, ``grpo`` and ``dr_grpo``."""
    if estimator == "rloo":
        return rloo_advantages(scores, k)
    if estimator in ("grpo", "dr_grpo"):
        return grpo_advantages(scores, k, scale_by_std=estimator == "grpo")
    raise ConfigError(f"'{estimator}' is not a sequence-level estimator")


def scaled_group_advantages(scores: torch.Tensor, k: int, scale_rewards: ScaleRewards = "group",
                            eps: float = 1e-4, sync: bool = True) -> torch.Tensor:
    """TRL's GRPO advantage with its ``scale_rewards``: ``(r_i - r̄) / (σ + eps)``, r̄ the group mean.

    σ is the group's unbiased std (``group``: ``grpo_advantages``), the unbiased std of every
    score of the batch (``batch``: over all ranks when ``sync`` and a process group runs, as TRL
    gathers the scores first; Lite PPO's recipe, close to REINFORCE++-baseline), or no scaling
    (``none``: ``r_i - r̄``, Dr. GRPO's advantage, as ``grpo_advantages(scale_by_std=False)``).

    Args:
        scores: (b * k,) sequence scores, groups in consecutive rows.
    Returns:
        (b * k,) advantages.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ConfigError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, not '{scale_rewards}'")
    if scale_rewards != "batch":
        return grpo_advantages(scores, k, scale_by_std=scale_rewards == "group", eps=eps)
    centred = grpo_advantages(scores, k, scale_by_std=False)
    _, var = _global_moments(scores, torch.ones_like(scores), sync)
    return centred / (var.sqrt() + eps)


def check_scale_rewards(estimator: str, scale_rewards: str | None) -> None:
    """Refuse an unknown ``scale_rewards`` or one given to an estimator other than ``grpo``
    (``dr_grpo`` is ``grpo`` with ``scale_rewards: none`` and the constant divisor)."""
    if scale_rewards is None:
        return
    if scale_rewards not in SCALE_REWARDS:
        raise ConfigError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, not '{scale_rewards}'")
    if estimator != "grpo" and scale_rewards != "group":
        raise ConfigError(f"scale_rewards sets the std grpo divides its group advantages by; advantage_estimator "
                          f"'{estimator}' does not divide by one, so remove scale_rewards or use grpo")


def nonzero_std_groups(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(b,) True for each group of k samples whose scores are not all equal: the groups DAPO's
    dynamic sampling keeps, because a group-relative advantage of a group with std 0 is 0 for
    every sample and the group teaches nothing. Equality is exact (max > min): a float32 std
    of k equal scores need not be 0 (seven scores of 0.1 give 8e-9), so ``1 - mask.float().mean()``
    is ``group_statistics``' ``frac_reward_zero_std`` except where that misses such groups.

    Args:
        scores: (b * k,) sequence scores, groups in consecutive rows.
    """
    if k < 2:
        raise ConfigError(f"dynamic sampling drops prompts whose samples all score the same, which needs "
                          f"samples_per_prompt >= 2 (it is {k}); raise samples_per_prompt or turn it off")
    g = _groups(scores, k)
    return g.amax(-1) > g.amin(-1)
