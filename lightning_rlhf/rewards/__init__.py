"""Rewards: callables ``(prompts, responses) -> scores`` of shape (b,)."""

from lightning_rlhf.rewards.base import (
    RewardFunction,
    ValidatedReward,
    build_reward,
    import_reward_function,
)
from lightning_rlhf.rewards.normalization import ScoreNormalizer
from lightning_rlhf.rewards.sentiment import SentimentClassifierReward, find_label_index

__all__ = [
    "RewardFunction",
    "ScoreNormalizer",
    "SentimentClassifierReward",
    "ValidatedReward",
    "build_reward",
    "find_label_index",
    "import_reward_function",
]
