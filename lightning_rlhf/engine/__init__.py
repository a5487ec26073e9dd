"""The policy-gradient engine as functions: one rollout path and one update loop for PPO and
every critic-free estimator, testable without a Trainer (``modules.PPOModule`` orchestrates it)."""

from lightning_rlhf.engine.config import (
    AdvantageConfig,
    EngineConfig,
    RewardConfig,
    SamplingConfig,
    UpdateConfig,
    resolve_ppo_arguments,
)
from lightning_rlhf.engine.models import load_rollout_models
from lightning_rlhf.engine.rollout import RolloutModels, collect_rollout
from lightning_rlhf.engine.samples import sample_table_rows
from lightning_rlhf.engine.stats import logprob_mismatch_warning, rollout_stats
from lightning_rlhf.engine.update import Optimization, UpdateResult, check_batch_division, ppo_update

__all__ = [
    "AdvantageConfig",
    "EngineConfig",
    "Optimization",
    "RewardConfig",
    "RolloutModels",
    "SamplingConfig",
    "UpdateConfig",
    "UpdateResult",
    "check_batch_division",
    "logprob_mismatch_warning",
    "collect_rollout",
    "load_rollout_models",
    "ppo_update",
    "resolve_ppo_arguments",
    "rollout_stats",
    "sample_table_rows",
]
