"""Masked statistics, per-token rewards and generalised advantage estimation."""

from __future__ import annotations

import torch

from lightning_rlhf.distributed import global_sum


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` is 1 (all, or along ``dim``)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def _global_moments(x: torch.Tensor, mask: torch.Tensor, sync: bool) -> tuple[torch.Tensor, torch.Tensor]:
    mask = mask.to(x.dtype)
    sums = torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()])
    if sync:
        sums = global_sum(sums)
    total, total_sq, count = sums
    mean = total / count.clamp(min=1)
    var = total_sq / count.clamp(min=1) - mean**2
    # unbiased, as torch.var and TRL
    var = var * count / (count - 1).clamp(min=1)
    return mean, var.clamp(min=0)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, sync: bool = True
) -> torch.Tensor:
    """Normalise masked entries to mean 0 and variance 1; masked-out entries come back as 0.

    With ``sync`` and an initialised process group, mean and variance are over all ranks.

    Args:
        x, mask: (b, r).
        shift_mean: if False, keep the mean (reward whitening, N-details P9).
    """
    mean, var = _global_moments(x, mask, sync)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, response_mask: torch.Tensor
) -> torch.Tensor:
    """``rewards[t] = -kl_coef * kl[t]``, plus the score on the last real response token.

    Args:
        scores: (b,) reward-model scores.
        kl: (b, r) per-token KL estimates.
        response_mask: (b, r).
    Returns:
        (b, r) rewards, 0 after the response ends (N-details P8).
    """
    rewards = -kl_coef * kl * response_mask
    last = (response_mask.sum(-1).long().clamp(min=1) - 1).unsqueeze(-1)
    return rewards.scatter_add(-1, last, scores.to(rewards.dtype).unsqueeze(-1))


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2015, arXiv:1506.02438).

    ``delta_t = r_t + gamma * V_{t+1} - V_t``; ``A_t = delta_t + gamma * lam * A_{t+1}``; the
    value after the last real token is 0.

    Args:
        rewards, values, response_mask: (b, r).
    Returns:
        advantages (b, r) and returns = advantages + values (b, r), both 0 where masked.
    """
    values = values * response_mask
    rewards = rewards * response_mask
    steps = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages[:, t] = last_gae
    advantages = advantages * response_mask
    return advantages, (advantages + values) * response_mask


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[returns - values] / Var[returns] over masked entries (1 is a perfect critic)."""
    _, var_ret = _global_moments(returns, mask, sync=False)
    _, var_err = _global_moments(returns - values, mask, sync=False)
    return 1.0 - var_err / var_ret.clamp(min=1e-8)
