"""Rollout correction: truncated importance weights for a sampler that is not the trained policy.

The sampler (a bf16 or compiled decoder, vLLM) draws responses with log-probs ``sampler_logprobs``
that differ a little from those the trainer computes for the same tokens with the same weights
(``old_logprobs``). The policy gradient is then off-policy by the ratio
``ρ = π_old / π_sampler``; weighting each token's policy loss by a truncated ρ corrects it with
bounded variance (truncated importance sampling, Ionides 2008; TRL's
``vllm_importance_sampling_correction``, OpenRLHF's ``tis`` / ``seq-mask-tis``, verl's "rollout
correction"). With Δ_t = m_t (log π_old - log π_sampler) and C the cap:

| ``mode`` | weight of token t of response i | TRL ``vllm_importance_sampling_mode`` |
|---|---|---|
| ``none`` | 1 | correction off |
| ``token_tis`` | ``min(exp(Δ_t), C)`` | ``token_truncate`` |
| ``sequence_tis`` | ``min(exp(sum_t Δ_t), C)`` at every token of i | ``sequence_truncate`` |
| ``sequence_mask`` | ``exp(sum_t Δ_t)`` if it is <= C, else 0 (the response is dropped) | ``sequence_mask`` |

The sequence ratio is the product of the token ratios (the likelihood ratio of the whole
response), as in TRL and verl; it is not length-normalised like GSPO's. Weights are constants
(no gradient): both log-probs come from the rollout. They multiply the policy term of the loss
(``rl.losses.ppo_policy_loss(rollout_weights=...)``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from lightning_rlhf.errors import ConfigError

RolloutCorrectionMode = Literal["none", "token_tis", "sequence_tis", "sequence_mask"]
ROLLOUT_CORRECTION_MODES = ("none", "token_tis", "sequence_tis", "sequence_mask")
DEFAULT_CAP = 3.0  # TRL's vllm_importance_sampling_cap


class RolloutCorrection(NamedTuple):
    """Per-token weights (b, r), 0 off the response, and detached statistics of the raw ratio ρ
    (before truncation or masking) over this call's units: response tokens for ``token_tis`` and
    ``none``, responses for the sequence modes. ``frac_truncated`` is the share of units whose ρ
    exceeded the cap and was cut to it (the ``*_tis`` modes), ``frac_masked`` the share dropped
    (``sequence_mask``); each is 0 in the other modes."""

    weights: torch.Tensor
    ratio_mean: torch.Tensor
    ratio_max: torch.Tensor
    frac_truncated: torch.Tensor
    frac_masked: torch.Tensor


def check_rollout_correction(mode: str, cap: float = DEFAULT_CAP) -> None:
    """Refuse an unknown mode or a cap <= 1 (it would cut even the on-policy ratio 1)."""
    if mode not in ROLLOUT_CORRECTION_MODES:
        raise ConfigError(f"rollout_correction must be one of {', '.join(ROLLOUT_CORRECTION_MODES)}, not '{mode}'")
    if not cap > 1:
        raise ConfigError(f"the rollout correction cap must be > 1 (TRL uses 3.0), not {cap}: a cap <= 1 would "
                          f"truncate or mask tokens whose sampler and trainer agree")


def rollout_correction_weights(
    old_logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    mode: RolloutCorrectionMode = "token_tis",
    cap: float = DEFAULT_CAP,
) -> RolloutCorrection:
    """Truncated importance weights π_old/π_sampler of each response token (module docstring).

    Args:
        old_logprobs: (b, r) log-probs of the sampled tokens under the trainer's forward of the
            rollout policy (the ``old_logprobs`` of the clipped loss).
        sampler_logprobs: (b, r) log-probs the sampler reported for the same tokens.
        response_mask: (b, r), 1 on response tokens.
        mode, cap: see the module docstring; ``none`` gives weights 1 and still the statistics,
            which measure the sampler/trainer mismatch.
    Returns:
        ``RolloutCorrection``: weights (b, r) and the statistics, as local (this call's) means.
    """
    check_rollout_correction(mode, cap)
    mask = response_mask.to(old_logprobs.dtype)
    with torch.no_grad():
        diff = (old_logprobs.detach() - sampler_logprobs.detach()).to(torch.float32) * mask
        if mode in ("sequence_tis", "sequence_mask"):
            ratio = torch.exp(diff.sum(-1))  # (b,)
            units = torch.ones_like(ratio)
        else:
            ratio = torch.exp(diff)  # (b, r), 1 on padding
            units = mask.to(torch.float32)
        count = units.sum().clamp(min=1)
        over = (ratio > cap).float() * units
        zero = torch.zeros((), device=ratio.device)
        if mode == "none":
            weights = torch.ones_like(ratio)
        elif mode == "sequence_mask":
            weights = ratio.masked_fill(ratio > cap, 0.0)
        else:
            weights = ratio.clamp(max=cap)
        if weights.dim() == 1:
            weights = weights.unsqueeze(-1).expand_as(mask)
        weights = (weights * mask).to(old_logprobs.dtype)
        frac_over = over.sum() / count
        return RolloutCorrection(
            weights,
            (ratio * units).sum() / count,
            (ratio * units).max() if units.any() else zero,
            frac_over if mode in ("token_tis", "sequence_tis") else zero,
            frac_over if mode == "sequence_mask" else zero,
        )
