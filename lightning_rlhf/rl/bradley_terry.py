"""Bradley-Terry reward-model loss on preference pairs (TRL's ``RewardTrainer``).

A reward model r scores a prompt + response with one logit. Under the Bradley-Terry model the
chosen response is preferred with probability ``σ(r_c - r_r)``, so the loss of a pair is
``-log σ(r_c - r_r - m)`` with m the pair's optional ``margin`` (0 without one; Llama 2's margin
loss: a pair marked as strongly preferred must be won by at least m). The loss fixes only
differences of rewards; ``center_rewards_coefficient`` c adds ``c * mean((r_c + r_r)²)``, which
pulls the mean reward towards 0 (Eisenstein et al. 2023, arXiv:2312.09244; TRL suggests 0.01),
so the logit of a response has a meaning on its own, as PPO's score.

Soft labels: with ``target`` p, the probability that the chosen response is preferred, the loss
is the cross-entropy ``-p log σ(z) - (1 - p) log σ(-z)`` (z = r_c - r_r - m), whose gradient in
z is ``σ(z) - p``; p = 1 is the hard loss above. ``soft_preference`` makes p from the scores
a machine labeller gave the two responses, ``σ((s_c - s_r) / τ)``: a pair the labeller nearly
tied then asks for a small reward gap instead of a won comparison (reward-model distillation,
as in RLAIF with the labeller's probabilities; Lee et al. 2023, arXiv:2309.00267).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class BradleyTerryLoss(NamedTuple):
    """The mean loss over pairs (with grad) and detached statistics: the share of pairs whose
    chosen reward is higher (ties count as wrong, as TRL's ``accuracy``), and the mean reward
    margin ``r_c - r_r``."""

    loss: torch.Tensor
    accuracy: torch.Tensor
    margin: torch.Tensor


def soft_preference(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """``σ((s_c - s_r) / τ)``: (b,), (b,) labeller scores -> (b,) probabilities that the chosen
    response is preferred, the soft labels of ``bradley_terry_loss(target=...)``."""
    if temperature <= 0:
        raise ValueError(f"the soft-label temperature must be > 0, not {temperature}")
    return torch.sigmoid((chosen_scores - rejected_scores) / temperature)


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float = 0.0,
    target: torch.Tensor | None = None,
) -> BradleyTerryLoss:
    """``mean(-p log σ(z) - (1 - p) log σ(-z)) + c * mean((r_c + r_r)²)`` over b pairs, with
    ``z = r_c - r_r - m``; with p = 1 (``target`` None) the first term is ``-log σ(z)``.

    Args:
        chosen_rewards, rejected_rewards: (b,) reward-model logits of the two responses (with grad).
        margin: (b,) m, the pairs' required reward margins; None = 0.
        center_rewards_coefficient: c; 0 = no centring.
        target: (b,) p in [0, 1], soft labels (``soft_preference``); None = hard labels, p = 1.
    """
    diff = chosen_rewards - rejected_rewards
    logits = diff if margin is None else diff - margin
    loss = -F.logsigmoid(logits) if target is None else \
        -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))
    loss = loss.mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((chosen_rewards + rejected_rewards) ** 2).mean()
    with torch.no_grad():
        return BradleyTerryLoss(loss, (diff > 0).float().mean(), diff.mean())
