"""Bradley-Terry reward-model loss on preference pairs (TRL's ``RewardTrainer``).

A reward model r scores a prompt + response with one logit. Under the Bradley-Terry model the
chosen response is preferred with probability ``σ(r_c - r_r)``, so the loss of a pair is
``-log σ(r_c - r_r - m)`` with m the pair's optional ``margin`` (0 without one; Llama 2's margin
loss: a pair marked as strongly preferred must be won by at least m). The loss fixes only
differences of rewards; ``center_rewards_coefficient`` c adds ``c * mean((r_c + r_r)²)``, which
pulls the mean reward towards 0 (Eisenstein et al. 2023, arXiv:2312.09244; TRL suggests 0.01),
so the logit of a response has a meaning on its own, as PPO's score.
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


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float = 0.0,
) -> BradleyTerryLoss:
    """``mean(-log σ(r_c - r_r - m)) + c * mean((r_c + r_r)²)`` over b pairs.

    Args:
        chosen_rewards, rejected_rewards: (b,) reward-model logits of the two responses (with grad).
        margin: (b,) m, the pairs' required reward margins; None = 0.
        center_rewards_coefficient: c; 0 = no centring.
    """
    diff = chosen_rewards - rejected_rewards
    logits = diff if margin is None else diff - margin
    loss = -F.logsigmoid(logits).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((chosen_rewards + rejected_rewards) ** 2).mean()
    with torch.no_grad():
        return BradleyTerryLoss(loss, (diff > 0).float().mean(), diff.mean())
