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
| ``bonbon`` | ``α (-log π_c) + (1 - α) (h - m_n)²``, ``m_n = (n - 1) H_{n-1}`` | BoNBoN (arXiv:2406.00832) |
| ``simpo`` | ``-(1 - ε) log σ(z) - ε log σ(-z)``, ``z = β (ā_c - ā_r) - γ`` | SimPO (arXiv:2405.14734) |

The batch loss is the mean over pairs; every pair weighs the same whatever its length.

SimPO has no reference: ā = log π / |y| is the policy's length-averaged log-prob
(``sequence_logprobs(..., average=True)``), γ (``simpo_gamma``) a target reward margin, and the
implicit reward of a response is β ā, as in TRL's ``CPOTrainer(loss_type="simpo")``, which
writes the same loss as ``β (ā_c - ā_r - γ/β)``. The other losses take whatever log-probs they are
given: summed (the papers' sequence log-likelihoods), or length-averaged for both policy and
reference, which is what TRL's ``DPOTrainer`` does for ``loss_type="ipo"`` (length-normalised IPO;
its target 1/(2β) is then in nats per token).

BoNBoN (Gui, Gârbacea, Veitch, NeurIPS 2024: "best-of-n by best-of-n") trains π to be the
best-of-n policy of the reference π0, from pairs whose chosen response is the best and rejected
the worst of n samples of π0 for their prompt. With F the reference CDF of the reward
(continuous, no ties), ``π_BoN(y) = n π0(y) F(r(y))^{n-1}``, so
``log π_BoN/π0 (y) = log n + (n - 1) log F(y)``. F of the best and the worst of n samples of π0
are the uniform order statistics U_(n) and U_(1), with ``E[log U_(k)] = ψ(k) - ψ(n + 1)``, so at
π = π_BoN the pair logit has ``E[h] = (n - 1)(ψ(n) - ψ(1)) = (n - 1) H_{n-1} = m_n`` (H the
harmonic number; 1, 3, 5.5 and 18.15 at n = 2, 3, 4 and 8). The IPO term ``(h - m_n)²``
regresses h on that target: IPO's ``(h - 1/(2β))²`` at ``β* = 1 / (2 m_n)`` (0.0275 at n = 8),
so ``beta`` plays no part and the implicit rewards are scaled by β*. That term fixes only the
difference of the two log-ratios; the SFT term ``-log π(y_best)`` anchors the best response
itself: a best of n samples of π0 is a sample of π_BoN, so its mean is the cross-entropy to
π_BoN, KL(π_BoN‖π) up to a constant. It is weighted by α (0.005 in the official README's
training command).

The SFT term is the summed negative log-likelihood of the best response, not a per-token mean:
the official code (``gl-ybnbxb/BoNBoN``, ``trainers.py``: ``_get_batch_logps(...,
average_log_prob=False)`` over the response tokens) uses the sequence log-probability, α = 0.005
was chosen at that scale, and the cross-entropy to π_BoN is a sequence-level quantity, as is the
IPO term (nats and nats²), so the balance between the two does not change with response length.
Pitfall of that code: its bonbon branch never sets ``ipo=True``, so it trains the sigmoid DPO
loss at β*, not the squared loss of the paper; this is the paper's squared loss. Pairs kept
only above a score margin (``--min-margin > 0``) are no longer plain best/worst order
statistics, and m_n is then only approximately their target.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from lightning_rlhf.errors import ConfigError

DPOLossType = Literal["sigmoid", "ipo", "hinge", "bonbon", "simpo"]
DPO_LOSSES = ("sigmoid", "ipo", "hinge", "bonbon", "simpo")
REFERENCE_FREE = ("simpo",)
BONBON_ALPHA = 0.005  # the weight of the SFT term in the official BoNBoN training command
SIMPO_GAMMA = 0.5  # TRL's CPOConfig.simpo_gamma


def sequence_logprobs(token_logprobs: torch.Tensor, response_mask: torch.Tensor,
                      average: bool = False) -> torch.Tensor:
    """Summed log-probs of each response: (b, r), (b, r) -> (b,); prompt and padding carry 0.
    With ``average``, divided by the response's token count (SimPO, length-normalised IPO)."""
    summed = (token_logprobs * response_mask).sum(-1)
    return summed / response_mask.sum(-1).clamp(min=1) if average else summed


def bonbon_margin(n: int) -> float:
    """``m_n = (n - 1) H_{n-1}``: the expected pair logit h of the best against the worst of n
    reference samples under the best-of-n policy (see the module docstring); 1/(2 m_n) is IPO's β*.

    >>> bonbon_margin(2), bonbon_margin(3), round(bonbon_margin(8), 6)
    (1.0, 3.0, 18.15)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"best-of-n needs a whole number n >= 2 of samples per prompt, not {n!r}")
    return (n - 1) * sum(1 / k for k in range(1, n))


class DPOLoss(NamedTuple):
    """The mean loss over pairs (with grad) and the detached implicit rewards, each (b,); for
    ``bonbon`` also the detached means of its two unweighted parts, ``-log π_c`` and ``(h - m_n)²``."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    sft_loss: torch.Tensor | None = None
    ipo_loss: torch.Tensor | None = None


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor | None,
    ref_rejected: torch.Tensor | None,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
    bon_n: int | None = None,
    bonbon_alpha: float = BONBON_ALPHA,
    simpo_gamma: float = SIMPO_GAMMA,
) -> DPOLoss:
    """Preference loss of b pairs from response log-probs (summed, or length-averaged), each (b,).

    Args:
        ref_chosen, ref_rejected: The reference's log-probs; None (and only None) for ``simpo``,
            whose inputs are the policy's length-averaged log-probs.
        beta: Strength of the implicit KL constraint; also scales the implicit rewards
            (not used by ``bonbon``, whose β* comes from ``bon_n``).
        label_smoothing: ε, the assumed share of flipped labels (``sigmoid`` and ``simpo``).
        bon_n: ``bonbon`` only: the n of the best-of-n pairs (chosen the best, rejected the worst
            of n reference samples), which sets the target margin ``bonbon_margin(n)``.
        bonbon_alpha: ``bonbon`` only: α, the weight of the SFT term ``-log π_c``.
        simpo_gamma: ``simpo`` only: γ, the target reward margin (TRL's default 0.5).
    """
    if loss_type not in DPO_LOSSES:
        raise ConfigError(f"loss_type must be one of {', '.join(DPO_LOSSES)}, not '{loss_type}'")
    if not 0 <= label_smoothing < 0.5:
        raise ConfigError(f"label_smoothing must be in [0, 0.5), not {label_smoothing}")
    if label_smoothing and loss_type not in ("sigmoid", "simpo"):
        raise ConfigError(f"label_smoothing applies to the sigmoid loss only (and to simpo), not to '{loss_type}'")
    if (ref_chosen is None or ref_rejected is None) != (loss_type in REFERENCE_FREE):
        raise ConfigError(f"loss_type '{loss_type}' " + ("takes no reference log-probs" if loss_type in REFERENCE_FREE
                                                         else "needs the reference's log-probs"))
    if loss_type == "simpo":
        z = beta * (policy_chosen - policy_rejected) - simpo_gamma
        losses = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
        return DPOLoss(losses.mean(), beta * policy_chosen.detach(), beta * policy_rejected.detach())
    if loss_type == "bonbon":
        if bon_n is None:
            raise ConfigError("the bonbon loss needs bon_n, the number of samples each best/worst pair was drawn from")
        if not 0 <= bonbon_alpha <= 1:
            raise ConfigError(f"bonbon_alpha must be in [0, 1], not {bonbon_alpha}")
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    h = chosen - rejected
    if loss_type == "bonbon":
        margin = bonbon_margin(bon_n)
        sft, ipo = -policy_chosen, (h - margin) ** 2  # (b,) each
        losses = bonbon_alpha * sft + (1 - bonbon_alpha) * ipo
        beta_star = 1 / (2 * margin)
        return DPOLoss(losses.mean(), beta_star * chosen.detach(), beta_star * rejected.detach(),
                       sft.detach().mean(), ipo.detach().mean())
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        losses = torch.relu(1 - beta * h)
    return DPOLoss(losses.mean(), beta * chosen.detach(), beta * rejected.detach())
