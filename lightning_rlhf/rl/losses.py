"""Clipped PPO policy and value losses (Schulman et al. 2017, arXiv:1707.06347).

Each loss is a weighted sum of per-token terms. ``weights`` (b, r) come from
``rl.aggregation.token_weights`` so that micro-batches and ranks add up to the mini-batch's
aggregate; without them a loss is the token mean of the tensors it is given. Statistics
(clip fractions, approximate KL, mean ratio) use the same weights, so they add up likewise.

Options of the clipped policy loss, in TRL's ``GRPOConfig`` terms:

- ``cliprange_high`` (TRL's ``epsilon_high``, DAPO's clip-higher, 0.28 suggested): the ratio is
  clipped to [1 - cliprange, 1 + cliprange_high], so unlikely tokens with a positive advantage
  can grow further before the clip stops their gradient.
- ``importance_sampling_level="sequence"`` (GSPO, Zheng et al. 2025, arXiv:2507.18071): every
  token of response i takes the length-normalised sequence ratio
  ``s_i = exp(mean_t(log π - log π_old))`` (``sequence_log_ratio``), and the clip acts on s_i.
- ``rollout_weights``: per-token truncated importance weights π_old/π_sampler from
  ``rl.rollout_correction``; they multiply the clipped policy term only (as TRL multiplies
  ``per_token_loss`` by ``importance_sampling_ratio``), not the value, KL or entropy terms.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.aggregation import aggregate

ImportanceSamplingLevel = Literal["token", "sequence"]
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


class PolicyLossStats(NamedTuple):
    """``clip_frac`` is the share of tokens whose clipped term is the active one; of those,
    ``clip_frac_low`` had ratio < 1 - cliprange with A < 0 and ``clip_frac_high`` ratio >
    1 + cliprange_high with A > 0 (TRL's ``clip_ratio/low_mean`` and ``high_mean``)."""

    loss: torch.Tensor
    clip_frac: torch.Tensor
    approx_kl: torch.Tensor
    ratio_max: torch.Tensor
    ratio_mean: torch.Tensor
    clip_frac_low: torch.Tensor | None = None
    clip_frac_high: torch.Tensor | None = None


class ValueLossStats(NamedTuple):
    loss: torch.Tensor
    clip_frac: torch.Tensor


def check_policy_loss_options(cliprange: float, cliprange_high: float | None = None,
                              importance_sampling_level: str = "token") -> None:
    """Refuse a clip range outside (0, 1) (the lower bound 1 - cliprange must stay above 0), a
    negative ``cliprange_high`` or an unknown ``importance_sampling_level``."""
    if not 0 < cliprange < 1:
        raise ConfigError(f"cliprange must be in (0, 1), not {cliprange}")
    if cliprange_high is not None and cliprange_high < 0:
        raise ConfigError(f"cliprange_high must be >= 0 (the ratio's upper bound is 1 + cliprange_high), "
                          f"not {cliprange_high}; leave it unset for the symmetric clip")
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ConfigError(f"importance_sampling_level must be token or sequence (GSPO), "
                          f"not '{importance_sampling_level}'")


def sequence_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                       response_mask: torch.Tensor) -> torch.Tensor:
    """GSPO's length-normalised sequence log-ratio at every token, with GSPO-token's gradient.

    Value: ``log s_i = sum_t m (log π - log π_old) / |o_i|`` at each of response i's tokens
    (0 on padding). Gradient: ``log π_t - sg(log π_t) + sg(log s_i)`` (sg = stop-gradient), so
    ``d s_{i,t} = s_i d log π_t``: each token's own log-prob gradient scaled by its sequence's
    ratio (GSPO-token, TRL's ``gspo_token``). Under any aggregation whose weights and advantages
    are constant within a response, its gradient equals that of TRL's
    ``importance_sampling_level="sequence"`` (the ratio s_i itself differentiated), and it also
    admits per-token advantages and weights.

    Args:
        logprobs: (b, r) log-probs under the policy being trained (with grad).
        old_logprobs, response_mask: (b, r).
    Returns:
        (b, r) log-ratios.
    """
    mask = response_mask.to(logprobs.dtype)
    seq = ((logprobs - old_logprobs) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    return (logprobs - logprobs.detach() + seq.detach()) * mask


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange: float = 0.2,
    weights: torch.Tensor | None = None,
    cliprange_high: float | None = None,
    importance_sampling_level: ImportanceSamplingLevel = "token",
    rollout_weights: torch.Tensor | None = None,
) -> PolicyLossStats:
    """``sum(w * c * max(-A * ratio, -A * clip(ratio, 1 - ε_low, 1 + ε_high)))`` over response tokens.

    Args:
        logprobs: (b, r) log-probs under the policy being trained (with grad).
        old_logprobs: (b, r) log-probs under the rollout policy.
        advantages, response_mask: (b, r).
        cliprange: ε_low (and ε_high unless ``cliprange_high`` is set).
        weights: (b, r) aggregation weights; default the token mean.
        cliprange_high: ε_high, the asymmetric upper clip (module docstring); None = cliprange.
        importance_sampling_level: ``token`` (PPO's per-token ratio) or ``sequence`` (GSPO's).
        rollout_weights: (b, r) c, the rollout-correction weights; None = 1.

    ``approx_kl`` is the per-token ``0.5 (log π - log π_old)²`` at either level; the ratio
    statistics are those of the ratio the loss clips.
    """
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        check_policy_loss_options(cliprange, cliprange_high, importance_sampling_level)
    token_log_ratio = (logprobs - old_logprobs) * response_mask
    log_ratio = token_log_ratio if importance_sampling_level == "token" else \
        sequence_log_ratio(logprobs, old_logprobs, response_mask)
    ratio = torch.exp(log_ratio)
    high = cliprange if cliprange_high is None else cliprange_high
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + high)
    per_token = torch.maximum(unclipped, clipped)
    if rollout_weights is not None:
        per_token = per_token * rollout_weights
    weights = _weights(weights, response_mask)
    loss = aggregate(per_token, weights)
    with torch.no_grad():
        active = clipped > unclipped
        clip_frac = aggregate(active.float(), weights)
        clip_low = aggregate((active & (ratio < 1.0 - cliprange)).float(), weights)
        clip_high = aggregate((active & (ratio > 1.0 + high)).float(), weights)
        approx_kl = 0.5 * aggregate(token_log_ratio**2, weights)
        ratio_max = (ratio * response_mask).max()
        ratio_mean = aggregate(ratio, weights)
    return PolicyLossStats(loss, clip_frac, approx_kl, ratio_max, ratio_mean, clip_low, clip_high)


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
    cliprange_high: float | None = None,
    importance_sampling_level: ImportanceSamplingLevel = "token",
    rollout_weights: torch.Tensor | None = None,
) -> PPOLoss:
    """``policy + vf_coef * value + kl_loss_coef * kl - entropy_coef * entropy``; every tensor is (b, r).

    ``weights`` aggregate every term the same way; ``entropy`` is their weighted sum. Without
    ``values`` (critic-free estimators) there is no value term; the KL term needs ``ref_logprobs``.
    ``cliprange_high``, ``importance_sampling_level`` and ``rollout_weights`` go to the policy
    term (``ppo_policy_loss``).
    """
    weights = _weights(weights, response_mask)
    pg = ppo_policy_loss(logprobs, old_logprobs, advantages, response_mask, cliprange, weights,
                         cliprange_high, importance_sampling_level, rollout_weights)
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
