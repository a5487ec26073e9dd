"""Clipped PPO policy and value losses (Schulman et al. 2017, arXiv:1707.06347).

Each loss is a weighted sum of per-token terms. ``weights`` (b, r) come from
``rl.aggregation.token_weights`` so that micro-batches and ranks add up to the mini-batch's
aggregate; without them a loss is the token mean of the tensors it is given. Statistics
(clip fractions, approximate KL, mean ratio) use the same weights, so they add up likewise.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lightning_rlhf.rl.aggregation import aggregate


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
    weights: torch.Tensor | None = None,
) -> PolicyLossStats:
    """``sum(w * max(-A * ratio, -A * clip(ratio, 1 - c, 1 + c)))`` over response tokens.

    Args:
        logprobs: (b, r) log-probs under the policy being trained (with grad).
        old_logprobs: (b, r) log-probs under the rollout policy.
        advantages, response_mask: (b, r).
        weights: (b, r) aggregation weights; default the token mean.
    """
    log_ratio = (logprobs - old_logprobs) * response_mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    weights = _weights(weights, response_mask)
    loss = aggregate(torch.maximum(unclipped, clipped), weights)
    with torch.no_grad():
        clip_frac = aggregate((clipped > unclipped).float(), weights)
        approx_kl = 0.5 * aggregate(log_ratio**2, weights)
        ratio_max = (ratio * response_mask).max()
        ratio_mean = aggregate(ratio, weights)
    return PolicyLossStats(loss, clip_frac, approx_kl, ratio_max, ratio_mean)


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange_value: float = 0.2,
    weights: torch.Tensor | None = None,
) -> ValueLossStats:
    """``0.5 * sum(w * max((V - R)^2, (clip(V, V_old +- c) - R)^2))`` over response tokens."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped - returns) ** 2
    weights = _weights(weights, response_mask)
    loss = 0.5 * aggregate(torch.maximum(loss_unclipped, loss_clipped), weights)
    with torch.no_grad():
        clip_frac = aggregate((loss_clipped > loss_unclipped).float(), weights)
    return ValueLossStats(loss, clip_frac)


def kl_penalty_loss(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Differentiable k3 KL to the reference, ``sum(w * (exp(q - p) - (q - p) - 1))`` with
    p = log-probs under the policy (with grad) and q = under the reference: GRPO's KL term.

    k3 is never negative and its gradient in p is ``1 - exp(q - p)``: it pulls each sampled
    token's log-prob towards the reference's. Args: (b, r) tensors; weights from ``token_weights``.
    """
    delta = ref_logprobs - logprobs
    return aggregate(torch.expm1(delta) - delta, weights)


def imitation_loss(logprobs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood ``-sum(w * log π(y_t))`` of demonstrated tokens: BOND's forward-KL
    term, whose gradient is SFT on Best-of-N samples. Args: (b, d) log-probs under the policy
    (with grad) and aggregation weights (0 off the demos' tokens)."""
    return -aggregate(logprobs, weights)


class PPOLoss(NamedTuple):
    """Total loss (with grad) and detached statistics of one micro-batch; ``value`` is None
    without a critic, ``kl`` is the KL-loss term (0 when it is off)."""

    loss: torch.Tensor
    policy: PolicyLossStats
    value: ValueLossStats | None
    entropy: torch.Tensor
    kl: torch.Tensor


def ppo_loss(
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor | None,
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor | None,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange: float,
    cliprange_value: float,
    vf_coef: float,
    entropy_coef: float,
    weights: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_loss_coef: float = 0.0,
) -> PPOLoss:
    """``policy + vf_coef * value + kl_loss_coef * kl - entropy_coef * entropy``; every tensor is (b, r).

    ``weights`` aggregate every term the same way; ``entropy`` is their weighted sum. Without
    ``values`` (critic-free estimators) there is no value term; the KL term needs ``ref_logprobs``.
    """
    weights = _weights(weights, response_mask)
    pg = ppo_policy_loss(logprobs, old_logprobs, advantages, response_mask, cliprange, weights)
    loss = pg.loss
    vf = None
    if values is not None:
        vf = ppo_value_loss(values, old_values, returns, response_mask, cliprange_value, weights)
        loss = loss + vf_coef * vf.loss
    kl = torch.zeros((), device=logprobs.device)
    if kl_loss_coef > 0:
        kl = kl_penalty_loss(logprobs, ref_logprobs, weights)
        loss = loss + kl_loss_coef * kl
    ent = aggregate(entropy, weights)
    return PPOLoss(loss - entropy_coef * ent, pg, vf, ent, kl.detach())


def _weights(weights: torch.Tensor | None, response_mask: torch.Tensor) -> torch.Tensor:
    if weights is not None:
        return weights
    mask = response_mask.float()
    return mask / mask.sum().clamp(min=1)
