"""Turn sampled responses, scores and log-probs into per-token rewards and advantages."""

from __future__ import annotations

import torch

from lightning_rlhf.rl.advantages import compute_gae, masked_whiten, per_token_rewards
from lightning_rlhf.rl.kl import KLEstimator, kl_estimate
from lightning_rlhf.rl.rollout import Rollout


def build_rollout(
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    responses: torch.Tensor,
    response_mask: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    values: torch.Tensor,
    scores: torch.Tensor,
    kl_coef: float,
    kl_estimator: KLEstimator = "k1",
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten_rewards: bool = False,
) -> Rollout:
    """Per-token KL penalty, score on the last token, GAE, then whitened advantages.

    Whitening statistics are gathered over all processes when a process group is running.
    Shapes: see ``Rollout``.
    """
    mask = response_mask.to(logprobs.dtype)
    kl = kl_estimate(logprobs, ref_logprobs, kl_estimator) * mask
    rewards = per_token_rewards(scores, kl, kl_coef, mask)
    if whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    values = values * mask
    advantages, returns = compute_gae(rewards, values, mask, gamma, lam)
    advantages = masked_whiten(advantages, mask)
    return Rollout(queries, query_mask, responses, response_mask, logprobs, ref_logprobs, values,
                   scores, rewards, advantages, returns, kl)
