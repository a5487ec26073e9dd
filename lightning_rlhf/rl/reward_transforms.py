"""Reward transforms that aim KL-regularised RL at the Best-of-N policy.

For a continuous reward, Best-of-N sampling from a reference π_ref is the distribution
``π_BoN(y|x) = N · π_ref(y|x) · F_x(r(y))^(N−1)``, F_x the CDF of the reward of reference
samples for prompt x. That is the optimum ``π_ref · exp(R / β) / Z`` of KL-regularised RL with
the reward ``R = log F_x(r(y))`` and ``β = 1 / (N − 1)`` (vBoN, Amini et al., ICLR 2025;
BOND's backward term, Sessa et al. 2024). F_x is estimated from m reference samples of the
same prompt; these functions turn the policy's scores and the reference scores into that
reward.

| ``reward_transform`` | reward of a policy sample with score r | reference samples |
|---|---|---|
| ``none`` | r | none |
| ``quantile`` | log F̂_x(r), F̂_x the mid-rank empirical CDF below | m ≥ 1 from the frozen reference |
| ``jbond`` | −log 16 if r is below both anchor samples' scores, else 0 (J-BOND) | 2 from the EMA anchor |

Rows follow the rollout's layout: b prompts with k policy samples each (n = b · k rows, a
prompt's samples consecutive) and (b, m) reference scores, row i belonging to prompt i // k.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from lightning_rlhf.errors import ConfigError

RewardTransform = Literal["none", "quantile", "jbond"]
REWARD_TRANSFORMS = ("none", "quantile", "jbond")
JBOND_PENALTY = math.log(16.0)


def _per_row(reference_scores: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(n, m) reference scores of each row's prompt."""
    if reference_scores.dim() != 2 or scores.dim() != 1 or scores.numel() % reference_scores.shape[0]:
        raise ValueError(f"scores {tuple(scores.shape)} do not split over the prompts of reference scores "
                         f"{tuple(reference_scores.shape)}")
    return reference_scores.repeat_interleave(scores.numel() // reference_scores.shape[0], dim=0)


def empirical_cdf(scores: torch.Tensor, reference_scores: torch.Tensor) -> torch.Tensor:
    """``F̂(r) = (1 + #{ref < r} + ½ #{ref = r}) / (m + 1)`` for each row.

    The sample itself counts as one more draw (vBoN's ``(rank + 1) / (M + 1)``), so F̂ lies in
    [1 / (m + 1), 1] and its log is finite; ties count half (mid-rank), so a constant reward
    gives every sample the same value.

    Args:
        scores: (n,) scores of the policy samples.
        reference_scores: (b, m) scores of m reference samples for each of the b prompts.
    Returns:
        (n,) estimated CDF values.
    """
    ref = _per_row(reference_scores, scores)
    r = scores.unsqueeze(-1)
    below = (ref < r).sum(-1).to(scores.dtype)
    ties = (ref == r).sum(-1).to(scores.dtype)
    return (1.0 + below + 0.5 * ties) / (ref.shape[1] + 1)


def quantile_reward(scores: torch.Tensor, reference_scores: torch.Tensor) -> torch.Tensor:
    """(n,) ``log F̂_x(r)``, vBoN's reward; 0 for a sample above every reference sample."""
    return empirical_cdf(scores, reference_scores).log()


def jbond_reward(scores: torch.Tensor, anchor_scores: torch.Tensor, penalty: float = JBOND_PENALTY) -> torch.Tensor:
    """(n,) J-BOND's reward (Sessa et al. 2024, Alg. 2): ``−penalty`` where the sample scores
    below both of its prompt's anchor samples (it would lose a Best-of-2 against the anchor), else 0.

    Args:
        anchor_scores: (b, 2) scores of two anchor samples per prompt.
    """
    if anchor_scores.shape[-1] != 2:
        raise ValueError(f"J-BOND compares with 2 anchor samples per prompt, got {anchor_scores.shape[-1]}")
    loses = scores < _per_row(anchor_scores, scores).min(-1).values
    return -penalty * loses.to(scores.dtype)


def transform_scores(transform: RewardTransform, scores: torch.Tensor,
                     reference_scores: torch.Tensor | None) -> torch.Tensor:
    """(n,) the reward ``transform`` gives the policy samples' ``scores``."""
    if transform == "none":
        return scores
    if reference_scores is None:
        raise ConfigError(f"reward_transform '{transform}' needs reference scores for every prompt; set "
                          f"reference_samples_per_prompt")
    if transform == "quantile":
        return quantile_reward(scores, reference_scores)
    if transform == "jbond":
        return jbond_reward(scores, reference_scores)
    raise ConfigError(f"reward_transform must be one of {', '.join(REWARD_TRANSFORMS)}, not '{transform}'")


def best_of_first(reference_scores: torch.Tensor, n: int) -> torch.Tensor:
    """(b,) index of the best of each prompt's first ``n`` reference samples (ties: the first):
    the Best-of-n sample BOND's forward term imitates."""
    if not 1 <= n <= reference_scores.shape[1]:
        raise ValueError(f"n must be in [1, {reference_scores.shape[1]}], got {n}")
    return reference_scores[:, :n].argmax(-1)


def bon_kl_coef(n: int) -> float:
    """``β = 1 / (N − 1)``: the KL coefficient whose optimum with the quantile reward is Best-of-N."""
    if n < 2:
        raise ConfigError(f"bon_n must be at least 2, not {n}")
    return 1.0 / (n - 1)


def check_reward_transform(transform: str, bon_n: int | None, reference_samples: int, kl_coef: float,
                           anchor_ema: float, jeffreys_beta: float, kl_estimator: str) -> None:
    """Refuse settings under which the transform would not aim at Best-of-N, in one line each.

    ``quantile`` needs ``bon_n`` = N, m ≥ 1 reference samples and ``kl_coef`` = 1/(N − 1);
    ``jbond`` needs an EMA anchor, 2 anchor samples and ``kl_coef`` = 1 (N = 2); the forward
    term (``jeffreys_beta`` < 1) needs at least ``bon_n`` reference samples to take the best of.
    Both use the unbiased ``k1`` KL, whose gradient in the reward is the reverse KL's.
    """
    if transform not in REWARD_TRANSFORMS:
        raise ConfigError(f"reward_transform must be one of {', '.join(REWARD_TRANSFORMS)}, not '{transform}'")
    if not 0.0 < jeffreys_beta <= 1.0:
        raise ConfigError(f"jeffreys_beta must be in (0, 1] (1: backward KL only), not {jeffreys_beta}")
    if not 0.0 <= anchor_ema < 1.0:
        raise ConfigError(f"anchor_ema must be in [0, 1) (0: no anchor), not {anchor_ema}")
    if reference_samples < 0:
        raise ConfigError(f"reference_samples_per_prompt must be >= 0, not {reference_samples}")
    if transform == "none":
        if anchor_ema > 0 or jeffreys_beta < 1:
            raise ConfigError("anchor_ema and jeffreys_beta belong to reward_transform jbond or quantile; "
                              "set reward_transform, or remove them")
        return
    if transform == "jbond":
        if bon_n not in (None, 2):
            raise ConfigError(f"reward_transform jbond distils Best-of-2 of its anchor; set bon_n: 2 (or remove "
                              f"it), not {bon_n}")
        bon_n = 2
        if anchor_ema <= 0:
            raise ConfigError("reward_transform jbond needs an EMA anchor; set anchor_ema (J-BOND's eta, e.g. 0.02)")
        if reference_samples != 2:
            raise ConfigError(f"reward_transform jbond compares with 2 anchor samples per prompt; set "
                              f"reference_samples_per_prompt: 2, not {reference_samples}")
    elif bon_n is None:
        raise ConfigError("reward_transform quantile aims at Best-of-N; set bon_n (N, e.g. 8)")
    if reference_samples < 1:
        raise ConfigError(f"reward_transform {transform} estimates each prompt's reward CDF from reference samples; "
                          f"set reference_samples_per_prompt >= 1 (e.g. 32)")
    if jeffreys_beta < 1 and reference_samples < bon_n:
        raise ConfigError(f"the forward term imitates the best of {bon_n} reference samples; set "
                          f"reference_samples_per_prompt >= {bon_n}, not {reference_samples}")
    beta = bon_kl_coef(bon_n)
    if not math.isclose(kl_coef, beta, rel_tol=1e-3):
        raise ConfigError(f"reward_transform {transform} with bon_n {bon_n} fixes the KL coefficient at "
                          f"1/(N-1) = {beta:.6g}; set kl_coef: {beta:.6g} (or remove it), not {kl_coef:g}")
    if kl_estimator != "k1":
        raise ConfigError(f"reward_transform {transform} needs kl_estimator k1 (the unbiased KL in the reward), "
                          f"not {kl_estimator}")
