"""Load what a rollout needs from the flat ``PPOModule`` arguments."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from lightning_rlhf.engine.rollout import RolloutModels
from lightning_rlhf.models.loading import disable_dropout, load_causal_lm, load_tokenizer
from lightning_rlhf.models.lora import policy_and_reference
from lightning_rlhf.models.value_head import PolicyWithValueHead
from lightning_rlhf.rewards import ScoreNormalizer, build_reward


def load_rollout_models(hp: Mapping[str, Any]) -> RolloutModels:
    """Tokenizer, policy (with a value head for ``gae``, a separate critic if asked), frozen
    reference (None with LoRA: the policy without its adapter), J-BOND's EMA anchor (a copy of
    the initial policy, with ``anchor_ema`` > 0), reward and score normaliser."""
    source, config, seed = hp["policy_name_or_path"], hp["policy_config"], hp["init_seed"]
    tokenizer = load_tokenizer(hp["tokenizer_name_or_path"] or source)
    lm, ref_model = policy_and_reference(source, config, hp["ref_name_or_path"], seed, hp["lora_r"], hp["lora_alpha"],
                                         hp["lora_target_modules"], hp["gradient_checkpointing"])
    critic = load_causal_lm(source, config, seed) if hp["separate_critic"] else None
    policy = PolicyWithValueHead(lm, critic, value_head=hp["advantage_estimator"] == "gae")
    disable_dropout(policy)  # log-ratios of the same text must not depend on dropout draws
    anchor = copy.deepcopy(lm).requires_grad_(False) if hp["anchor_ema"] > 0 else None
    reward_module, reward = build_reward(hp["reward_model"], hp["reward_fn"], hp["positive_label"],
                                         hp["reward_output"], hp["reward_batch_size"])
    return RolloutModels(policy, ref_model, anchor, tokenizer, reward,
                         ScoreNormalizer(hp["normalize_scores"], hp["score_clip"]), reward_module)
