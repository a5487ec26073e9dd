"""Direct preference optimisation losses (Rafailov et al. 2023, arXiv:2305.18290) and relatives.

A pair is a prompt with a chosen and a rejected response. With summed response log-probs
under the policy (π) and the frozen reference (ref), the implicit reward of a response is
``beta * (log π - log ref)`` and the pair's logit is
``h = (log π_c - log ref_c) - (log π_r - log ref_r)``:

| ``loss_type`` | per-pair loss | from |
|---|---|---|
| ``sigmoid`` | ``-(1 - ε) log σ(β h) - ε log σ(-β h)`` (ε = label smoothing, conservative DPO) | DPO |
| ``ipo`` | ``(h - 1 / (2 β))²`` | IPO (Azar et al. 2023, arXiv:2310.12036) |
| ``hinge`` | ``max(0, 1 - β h)`` | SLiC (Zhao et al. 2023) |

The batch loss is the mean over pairs; every pair weighs the same whatever its length.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from lightning_rlhf.errors import ConfigError

DPOLossType = Literal["sigmoid", "ipo", "hinge"]
DPO_LOSSES = ("sigmoid", "ipo", "hinge")


def sequence_logprobs(token_logprobs: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probs of each response: (b, r), (b, r) -> (b,); prompt and padding carry 0."""
    return (token_logprobs * response_mask).sum(-1)


class DPOLoss(NamedTuple):
    """The mean loss over pairs (with grad) and the detached implicit rewards, each (b,)."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOLoss:
    """Preference loss of b pairs from summed response log-probs, each (b,).

    Args:
        beta: Strength of the implicit KL constraint; also scales the implicit rewards.
        label_smoothing: ε, the assumed share of flipped labels (``sigmoid`` only).
    """
    if loss_type not in DPO_LOSSES:
        raise ConfigError(f"loss_type must be one of {', '.join(DPO_LOSSES)}, not '{loss_type}'")
    if not 0 <= label_smoothing < 0.5:
        raise ConfigError(f"label_smoothing must be in [0, 0.5), not {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ConfigError(f"label_smoothing applies to the sigmoid loss only, not to '{loss_type}'")
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    h = chosen - rejected
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        losses = torch.relu(1 - beta * h)
    return DPOLoss(losses.mean(), beta * chosen.detach(), beta * rejected.detach())
