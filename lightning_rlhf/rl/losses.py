"""Clipped PPO policy and value losses (Schulman et al. 2017, arXiv:1707.06347)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_rlhf.rl.advantages import masked_mean


class PolicyLossStats(NamedTuple):
    loss: torch.Tensor
    clip_frac: torch.Tensor
    approx_kl: torch.Tensor
    ratio_max: torch.Tensor
    ratio_mean: torch.Tensor


class ValueLossStats(NamedTuple):
    loss: torch.Tensor
    clip_frac: torch.Tensor


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange: float = 0.2,
) -> PolicyLossStats:
    """``mean(max(-A * ratio, -A * clip(ratio, 1 - c, 1 + c)))`` over response tokens.

    Args:
        logprobs: (b, r) log-probs under the policy being trained (with grad).
        old_logprobs: (b, r) log-probs under the rollout policy.
        advantages, response_mask: (b, r).
    """
    log_ratio = (logprobs - old_logprobs) * response_mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), response_mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped > unclipped).float(), response_mask)
        approx_kl = 0.5 * masked_mean(log_ratio**2, response_mask)
        ratio_max = (ratio * response_mask).max()
        ratio_mean = masked_mean(ratio, response_mask)
    return PolicyLossStats(loss, clip_frac, approx_kl, ratio_max, ratio_mean)


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> ValueLossStats:
    """``0.5 * mean(max((V - R)^2, (clip(V, V_old +- c) - R)^2))`` over response tokens."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), response_mask)
    with torch.no_grad():
        clip_frac = masked_mean((loss_clipped > loss_unclipped).float(), response_mask)
    return ValueLossStats(loss, clip_frac)


class PPOLoss(NamedTuple):
    """Total loss (with grad) and detached statistics of one micro-batch."""

    loss: torch.Tensor
    policy: PolicyLossStats
    value: ValueLossStats
    entropy: torch.Tensor


def ppo_loss(
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange: float,
    cliprange_value: float,
    vf_coef: float,
    entropy_coef: float,
) -> PPOLoss:
    """``policy + vf_coef * value - entropy_coef * entropy``; every tensor is (b, r)."""
    pg = ppo_policy_loss(logprobs, old_logprobs, advantages, response_mask, cliprange)
    vf = ppo_value_loss(values, old_values, returns, response_mask, cliprange_value)
    ent = masked_mean(entropy, response_mask)
    return PPOLoss(pg.loss + vf_coef * vf.loss - entropy_coef * ent, pg, vf, ent)
