"""Turn sampled responses, scores and log-probs into per-token rewards and advantages."""

from __future__ import annotations

import torch

from lightning_rlhf.rl.advantages import compute_gae, masked_whiten, per_token_rewards
from lightning_rlhf.rl.estimators import (
    SEQUENCE_LEVEL,
    Estimator,
    ScaleRewards,
    group_mean_baseline,
    reinforce_pp_advantages,
    remax_advantages,
    sequence_kl_advantages,
)
from lightning_rlhf.rl.kl import KLEstimator, kl_estimate
from lightning_rlhf.rl.rollout import Rollout


def build_rollout(
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    responses: torch.Tensor,
    response_mask: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    values: torch.Tensor | None,
    scores: torch.Tensor,
    kl_coef: float,
    kl_estimator: KLEstimator = "k1",
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten_rewards: bool = False,
    estimator: Estimator = "gae",
    samples_per_prompt: int = 1,
    greedy_scores: torch.Tensor | None = None,
    scale_rewards: ScaleRewards = "group",
    sampler_logprobs: torch.Tensor | None = None,
) -> Rollout:
    """Per-token KL penalty and score, then the estimator's advantages.

    ``gae``: GAE on the values, then advantages whitened over the global batch (PPO).
    Sequence-level estimators: one advantage per sequence from its score and its summed KL
    (``rl.estimators.sequence_kl_advantages``: for ``grpo`` the KL is taken off after the group
    normalisation, not put under the group's std), broadcast to its tokens. ``reinforce_pp*`` and
    ``remax``: per-token rewards as for PPO, turned into returns and baselined (``rl.estimators``);
    ``reinforce_pp_baseline`` takes the group mean off the score before the returns, so with
    ``gamma`` < 1 it is discounted like the score.
    ``kl_coef`` is 0 when the KL is not in the reward. Whitening statistics are gathered over all
    processes when a process group is running; groups never straddle processes.

    Args:
        values: (n, r) for ``gae``; None for the critic-free estimators.
        greedy_scores: (n,) scores of greedy responses, for ``remax``.
        scale_rewards: ``grpo``'s std (``rl.estimators.scaled_group_advantages``).
        sampler_logprobs: (n, r) the sampler's log-probs of the responses, kept for the rollout
            correction (``rl.rollout_correction``).
        samples_per_prompt: k; rows ``i * k .. i * k + k - 1`` answer the same prompt.
    Shapes: see ``Rollout``.
    """
    mask = response_mask.to(logprobs.dtype)
    kl = kl_estimate(logprobs, ref_logprobs, kl_estimator) * mask
    rewards = per_token_rewards(scores, kl, kl_coef, mask)
    if estimator == "gae":
        if whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        values = values * mask
        advantages, returns = compute_gae(rewards, values, mask, gamma, lam)
        advantages = masked_whiten(advantages, mask)
    else:
        values = None
        if estimator in SEQUENCE_LEVEL:
            advantages = sequence_kl_advantages(estimator, scores, kl.sum(-1), kl_coef, samples_per_prompt,
                                                scale_rewards)
            advantages = advantages.unsqueeze(-1) * mask
        elif estimator == "remax":
            if greedy_scores is None:
                raise ValueError("remax needs the scores of the greedy responses")
            advantages = remax_advantages(rewards, mask, greedy_scores, gamma)
        else:
            baseline = group_mean_baseline(scores, samples_per_prompt) if estimator == "reinforce_pp_baseline" \
                else None
            advantages = reinforce_pp_advantages(rewards, mask, baseline, gamma)
        returns = advantages
    return Rollout(queries, query_mask, responses, response_mask, logprobs, ref_logprobs, values,
                   scores, rewards, advantages, returns, kl, sampler_logprobs=sampler_logprobs)
