"""What a rollout says, in TRL's metric names where they exist."""

from __future__ import annotations

import torch

from lightning_rlhf.rl.advantages import explained_variance, masked_mean
from lightning_rlhf.rl.estimators import group_statistics
from lightning_rlhf.rl.masking import ends_with_eos
from lightning_rlhf.rl.rollout import Rollout


def rollout_stats(ro: Rollout, kl_coef: float, eos_token_id: int | None, samples_per_prompt: int
                  ) -> dict[str, torch.Tensor]:
    """Scalar statistics of one rollout of n rows.

    Args:
        ro: the rollout.
        kl_coef: the KL coefficient in use (in the reward or the loss), for the RLHF reward
            ``score - kl_coef * KL``.
        eos_token_id: for the share of responses that end with EOS.
        samples_per_prompt: k; with k > 1 the group statistics of the scores.
    """
    kl_per_seq = ro.kl.sum(-1)
    rlhf_reward = ro.scores - kl_coef * kl_per_seq
    mask = ro.response_mask.float()
    adv_mean = masked_mean(ro.advantages, mask)
    stats = {
        "reward/mean": rlhf_reward.mean(),
        "reward/std": rlhf_reward.std(),
        "reward/score": ro.scores.mean(),
        "reward/score_std": ro.scores.std(),
        "objective/kl": kl_per_seq.mean(),
        "advantages/mean": adv_mean,
        "advantages/std": masked_mean((ro.advantages - adv_mean) ** 2, mask).sqrt(),
        "rollout/response_length": mask.sum(-1).mean(),
        "rollout/eos_fraction": ends_with_eos(ro.responses, ro.response_mask, eos_token_id).float().mean(),
    }
    if ro.values is not None:
        stats["value/explained_variance"] = explained_variance(ro.values, ro.returns, ro.response_mask)
    if samples_per_prompt > 1:
        stats["reward/group_std"], stats["frac_reward_zero_std"] = group_statistics(ro.scores, samples_per_prompt)
    return stats


def logprob_mismatch_warning(step: int, diff_mean: float, tolerance: float) -> str:
    """The warning for a sampler whose log-probs of the sampled tokens are not the trainer's."""
    return (f"step {step}: the sampler's log-probs differ from the trainer's by {diff_mean:.2g} nats per token on "
            f"average (logprob_tolerance {tolerance:g}), so PPO's first ratio is not 1. Likely causes: low-precision "
            f"autocast (bf16/16-mixed) in the sampler or trunk, weights changed between sampling and the forward, "
            f"or a sampler that is not the policy; watch rollout/logprob_diff_mean")
