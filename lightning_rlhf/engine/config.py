"""Typed settings of the policy-gradient engine, and the checks that refuse bad combinations.

``PPOModule`` keeps its flat constructor arguments (the YAML users write, in TRL's vocabulary);
``EngineConfig.from_hparams`` groups them into the four settings the engine's functions take,
so ``collect_rollout`` and ``ppo_update`` run without a Trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.aggregation import AGGREGATIONS, Aggregation, aggregation_for_loss_type, resolve_aggregation
from lightning_rlhf.rl.estimators import GROUP_BASELINE, Estimator, ScaleRewards, check_estimator, check_scale_rewards
from lightning_rlhf.rl.kl import KLEstimator
from lightning_rlhf.rl.losses import ImportanceSamplingLevel, check_policy_loss_options
from lightning_rlhf.rl.reward_transforms import RewardTransform, bon_kl_coef, check_reward_transform
from lightning_rlhf.rl.rollout_correction import DEFAULT_CAP, RolloutCorrectionMode, check_rollout_correction


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are drawn: k per prompt, lengths in [min, max], at ``temperature``; with
    ``dynamic_sampling`` (DAPO), groups whose k scores are all equal are replaced by groups of
    other prompts, drawn at most ``dynamic_sampling_tries`` times (``engine.dynamic``)."""

    response_min_tokens: int = 16
    response_max_tokens: int = 16
    temperature: float = 0.7
    stop_at_eos: bool = False
    samples_per_prompt: int = 1
    compile_generation: bool = True
    dynamic_sampling: bool = False
    dynamic_sampling_tries: int = 3


@dataclass(frozen=True)
class RewardConfig:
    """How a sample's score is made: the missing-EOS penalty and a Best-of-N reward transform."""

    missing_eos_penalty: float | None = None
    reward_transform: RewardTransform = "none"
    bon_n: int | None = None
    reference_samples_per_prompt: int = 0
    jeffreys_beta: float = 1.0


@dataclass(frozen=True)
class AdvantageConfig:
    """Per-token rewards (score and KL penalty) and the advantage estimator."""

    advantage_estimator: Estimator = "gae"
    kl_estimator: KLEstimator = "k1"
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False
    scale_rewards: ScaleRewards = "group"


@dataclass(frozen=True)
class UpdateConfig:
    """The clipped updates: epochs x mini-batches x micro-batches, the loss's weights, the clip
    (``cliprange_high``: DAPO's clip-higher), the ratio's level (``sequence``: GSPO) and the
    truncated importance correction of the sampler's drift (``rl.rollout_correction``)."""

    ppo_epochs: int = 4
    num_mini_batches: int = 1
    micro_batch_size: int | None = None
    loss_aggregation: Aggregation = "token_mean"
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    entropy_coef: float = 0.0
    ratio_threshold: float = 10.0
    fuse_first_forward: bool = True
    cliprange_high: float | None = None
    importance_sampling_level: ImportanceSamplingLevel = "token"
    rollout_correction: RolloutCorrectionMode = "none"
    rollout_correction_cap: float = DEFAULT_CAP


@dataclass(frozen=True)
class EngineConfig:
    """Everything ``collect_rollout`` and ``ppo_update`` read."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    advantages: AdvantageConfig = field(default_factory=AdvantageConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> EngineConfig:
        """Pick each group's fields by name from the flat ``PPOModule`` arguments."""
        def pick(kind: type) -> Any:
            return kind(**{f.name: hparams[f.name] for f in dataclasses.fields(kind) if f.name in hparams})
        return cls(pick(SamplingConfig), pick(RewardConfig), pick(AdvantageConfig), pick(UpdateConfig))

    def fuses_first_forward(self, rows: int) -> bool:
        """Whether the rollout's policy forward keeps its graph for the first update: one
        mini-batch that one micro-batch holds whole."""
        u = self.update
        return u.fuse_first_forward and u.num_mini_batches == 1 and (u.micro_batch_size or rows) >= rows


def resolve_ppo_arguments(hp: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse contradictory ``PPOModule`` arguments; return the defaults that depend on others.

    Returns:
        ``kl_coef`` (0.2, or 1/(N-1) with a reward transform), ``loss_aggregation`` (set, or that
        of TRL's ``loss_type``, else the estimator's own; another is noted in one line),
        ``adaptive_kl`` (adaptive only for a KL in the reward without a reward transform, unless
        set) and ``scale_rewards`` (``grpo``'s std: ``group`` unless set).
    """
    if not 1 <= hp["response_min_tokens"] <= hp["response_max_tokens"]:
        raise ConfigError(f"response length range [{hp['response_min_tokens']}, {hp['response_max_tokens']}] is "
                          f"empty; set 1 <= response_min_tokens <= response_max_tokens")
    if (hp["reward_model"] is None) == (hp["reward_fn"] is None):
        raise ConfigError("set exactly one of reward_model (a classifier) and reward_fn (an import path); "
                          "to use reward_fn, also set reward_model: null")
    estimator, transform = hp["advantage_estimator"], hp["reward_transform"]
    check_estimator(estimator, hp["samples_per_prompt"])
    if hp["kl_in_reward"] and hp["kl_loss_coef"] > 0:
        raise ConfigError("the KL is both in the reward (kl_in_reward: true) and in the loss (kl_loss_coef > 0); "
                          "choose one: kl_in_reward: false for GRPO's KL loss, or kl_loss_coef: 0")
    if hp["kl_loss_coef"] < 0:
        raise ConfigError(f"kl_loss_coef must be >= 0, not {hp['kl_loss_coef']}")
    if hp["separate_critic"] and estimator != "gae":
        raise ConfigError(f"separate_critic trains a value network, which '{estimator}' does not use; "
                          "remove separate_critic or use advantage_estimator: gae")
    aggregation = hp["loss_aggregation"]
    if aggregation is not None and aggregation not in AGGREGATIONS:
        raise ConfigError(f"loss_aggregation must be one of {', '.join(AGGREGATIONS)}, not '{aggregation}'")
    if hp["loss_type"] is not None:
        from_type = aggregation_for_loss_type(hp["loss_type"])
        if aggregation not in (None, from_type):
            raise ConfigError(f"loss_type {hp['loss_type']} is loss_aggregation {from_type}, not {aggregation}; "
                              f"set one of the two")
        aggregation = from_type
    check_scale_rewards(estimator, hp["scale_rewards"])
    check_policy_loss_options(hp["cliprange"], hp["cliprange_high"], hp["importance_sampling_level"])
    check_rollout_correction(hp["rollout_correction"], hp["rollout_correction_cap"])
    if hp["dynamic_sampling"]:
        if estimator not in GROUP_BASELINE:
            raise ConfigError(f"dynamic_sampling replaces groups whose samples all score the same, whose "
                              f"group-relative advantage is 0; '{estimator}' has no group baseline, so use one "
                              f"of {', '.join(GROUP_BASELINE)} or remove dynamic_sampling")
        if hp["dynamic_sampling_tries"] < 1:
            raise ConfigError(f"dynamic_sampling_tries must be >= 1, not {hp['dynamic_sampling_tries']}")
    if hp["lora_r"] > 0 and hp["ref_name_or_path"] is not None:
        raise ConfigError("with lora_r > 0 the reference is the policy without its adapter; remove ref_name_or_path")
    kl_coef = hp["kl_coef"]
    if kl_coef is None:
        n = 2 if transform == "jbond" else hp["bon_n"]
        kl_coef = 0.2 if transform == "none" else bon_kl_coef(n) if n and n >= 2 else float("nan")
    check_reward_transform(transform, hp["bon_n"], hp["reference_samples_per_prompt"], kl_coef, hp["anchor_ema"],
                           hp["jeffreys_beta"], hp["kl_estimator"])
    if transform != "none" and (hp["lora_r"] > 0 or hp["adaptive_kl"] or hp["kl_loss_coef"] > 0
                                or not hp["kl_in_reward"]):
        raise ConfigError(f"reward_transform {transform} fixes a KL coefficient in the reward against a separate "
                          f"reference model; set kl_in_reward: true, adaptive_kl: false, kl_loss_coef: 0 and lora_r: 0")
    adaptive = hp["adaptive_kl"]
    if adaptive is None:
        adaptive = hp["kl_loss_coef"] == 0 and transform == "none"
    own = resolve_aggregation(estimator, None)
    if aggregation not in (None, own):
        rank_zero_info(f"note: advantage_estimator {estimator} with loss_aggregation {aggregation} (its own is {own})")
    return {"kl_coef": kl_coef, "loss_aggregation": aggregation or own, "adaptive_kl": adaptive,
            "scale_rewards": hp["scale_rewards"] or "group"}
