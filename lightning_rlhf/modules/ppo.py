"""``PPOModule``: the Lightning orchestration of the policy-gradient engine (``lightning_rlhf.engine``).

One ``training_step`` is one iteration on a batch of prompts (manual optimization): ``collect_rollout``,
``ppo_update`` (``ppo_epochs * num_mini_batches`` optimizer steps, which ``global_step`` counts), KL control;
this module holds the hooks, logging and checkpoint state.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from transformers import PreTrainedModel

from lightning_rlhf import engine
from lightning_rlhf.distributed import all_ranks_true, global_mean
from lightning_rlhf.engine.dynamic import train_prompt_refill
from lightning_rlhf.guard import NonFiniteGuard
from lightning_rlhf.modules.checks import require_own_checkpoint, require_same_tokenizer
from lightning_rlhf.modules.policy_stage import PolicyStage
from lightning_rlhf.modules.rollout_generator import RolloutGenerator
from lightning_rlhf.optim import Schedule, configure_adamw
from lightning_rlhf.rl.aggregation import Aggregation, LossType
from lightning_rlhf.rl.anchor import ema_update_
from lightning_rlhf.rl.estimators import Estimator, ScaleRewards
from lightning_rlhf.rl.kl import AdaptiveKLController, FixedKLController, KLEstimator
from lightning_rlhf.rl.losses import ImportanceSamplingLevel
from lightning_rlhf.rl.reward_transforms import RewardTransform
from lightning_rlhf.rl.rollout_correction import RolloutCorrectionMode
from lightning_rlhf.sharding import gathered


class PPOModule(PolicyStage):
    """Policy-gradient fine-tuning of a causal LM against a reward, with a KL penalty to a frozen
    reference: PPO with a value head (``advantage_estimator: gae``) or a critic-free estimator.
    The formulas and papers of every estimator, transform and loss: ``docs/algorithms.md``.

    Args:
        policy_name_or_path: Hub id or folder of the policy (the SFT export).
        policy_config: Config fields of a randomly initialised policy instead (tests, benchmarks);
            policy_name_or_path must then be null.
        tokenizer_name_or_path: Tokenizer of the policy; defaults to policy_name_or_path.
        ref_name_or_path: Frozen reference; defaults to the policy's source (reloaded on resume, not checkpointed).
        reward_model: Hub id or folder of a sequence classifier scoring prompt + response.
        reward_fn: Import path ``pkg.module:function`` of a reward ``(prompts, responses) -> (b,)``.
        positive_label: Name of the classifier's positive label in ``id2label``.
        reward_output: ``logit`` or ``probability`` of the positive label.
        reward_batch_size: Texts per reward-classifier forward.
        normalize_scores: Shift and scale scores by mean/std of the first rollout batch (all ranks).
        score_clip: Clip (normalised) scores to [-score_clip, score_clip].
        response_min_tokens: Shortest response; lengths are drawn from [min, max] (equal: a fixed length).
        response_max_tokens: Longest response (``max_new_tokens``).
        temperature: Sampling temperature; also divides logits for every log-prob.
        stop_at_eos: End responses at EOS and mask everything after it.
        missing_eos_penalty: With stop_at_eos, subtract this from the scores of responses without EOS.
        advantage_estimator: ``gae`` (PPO, value head) or a critic-free one (``rl.estimators``).
        samples_per_prompt: k responses per prompt (one prefill); the group estimators need k >= 2.
        kl_estimator: ``k1`` (log-ratio) or ``k3``, for the KL in the reward.
        kl_in_reward: Put beta * KL in the per-token reward (sequence estimators: off the score, no gradient).
        kl_loss_coef: > 0: a k3 KL term with this coefficient in the loss instead (GRPO; kl_in_reward: false).
        kl_coef: Initial (or fixed) beta in the reward. Default (null): 0.2, or 1/(N - 1) with a reward transform.
        reward_transform: ``none``, ``quantile`` (vBoN) or ``jbond`` (J-BOND) (``rl.reward_transforms``).
        bon_n: N of the Best-of-N a reward transform aims at (2 for ``jbond``).
        reference_samples_per_prompt: m reference (or anchor) samples per prompt for a transform's CDF.
        jeffreys_beta: BOND's weight of the policy-gradient loss against the NLL of the best reference sample.
        anchor_ema: η > 0 keeps an EMA anchor of the policy (θ_a ← (1-η) θ_a + η θ), J-BOND's comparison.
        adaptive_kl: Adapt the KL coefficient towards kl_target; default: only for a KL in the raw reward.
        kl_target: Target KL per sequence, in nats.
        kl_horizon: Horizon of the adaptive controller, in samples.
        gamma: Discount.
        lam: GAE lambda.
        whiten_rewards: Whiten per-token rewards (keeping their mean) before GAE.
        ppo_epochs: Passes over each rollout batch.
        num_mini_batches: Optimizer steps per pass; must divide the batch.
        micro_batch_size: Rows per forward/backward (gradient accumulation); must divide the mini-batch.
        loss_aggregation: How token losses add up (``rl.aggregation``); default: the estimator's own.
        loss_type: TRL's ``GRPOConfig.loss_type`` name for an aggregation: ``grpo``, ``dr_grpo``, ``dapo``, ``bnpo``.
        scale_rewards: ``grpo``'s std: ``group`` (default), ``batch`` or ``none`` (TRL's ``scale_rewards``).
        dynamic_sampling: Replace groups whose samples all score the same by other prompts' groups (DAPO).
        dynamic_sampling_tries: Refills per iteration; groups still missing keep zero-std ones.
        cliprange: Policy ratio clip (the lower one when cliprange_high is set).
        cliprange_high: Upper ratio clip 1 + cliprange_high (DAPO's clip-higher, TRL's ``epsilon_high``).
        importance_sampling_level: ``token`` (PPO) or ``sequence`` (GSPO's length-normalised ratio).
        rollout_correction: ``none``, ``token_tis``, ``sequence_tis`` or ``sequence_mask``: weight the policy
            loss by the truncated sampler/trainer ratio (``rl.rollout_correction``; for bf16 or external samplers).
        rollout_correction_cap: Truncation (or mask) threshold of that ratio; > 1.
        cliprange_value: Value clip.
        vf_coef: Weight of the value loss.
        entropy_coef: Weight of the entropy bonus.
        max_grad_norm: Clip the (unscaled) gradient norm; None to disable.
        ratio_threshold: Skip a mini-batch whose mean policy/old ratio exceeds this (TRL's ``ratio_threshold``).
        logprob_tolerance: Warn once when sampler and trainer log-probs differ by more (nats/token, mean).
        compile_generation: Sample with the compiled static-cache step (the eager loop's tokens, faster).
        max_bad_steps: Stop with an error after this many consecutive non-finite steps.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay, on matrices only.
        warmup_steps: Linear warmup, in optimizer steps.
        lr_schedule: Decay after warmup: constant, linear or cosine.
        adam_eps: AdamW epsilon.
        lora_r: LoRA rank; > 0 trains adapters only, the reference being the policy without its adapter.
        lora_alpha: LoRA scaling numerator.
        lora_target_modules: Module names to adapt; None = peft's default for the architecture.
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        separate_critic: Train a separate value network (a copy of the initial policy), as TRL's PPO.
        fuse_first_forward: With one mini-batch, reuse the rollout's policy forward for the first update.
        sampling_seed: Seed of the rollout generator (offset by the process rank).
        init_seed: Seed for random initialisation from policy_config.
        export_dir: Folder for the policy's ``save_pretrained`` export; default ``<log_dir>/export``.
    """

    frozen_prefixes = ("ref_model.", "reward.")

    def __init__(
        self, policy_name_or_path: str | None = "gpt2", policy_config: dict[str, Any] | None = None,
        tokenizer_name_or_path: str | None = None, ref_name_or_path: str | None = None,
        reward_model: str | None = "lvwerra/distilbert-imdb", reward_fn: str | None = None,
        positive_label: str = "POSITIVE", reward_output: Literal["logit", "probability"] = "logit",
        reward_batch_size: int = 64, normalize_scores: bool = False, score_clip: float | None = None,
        response_min_tokens: int = 16, response_max_tokens: int = 16, temperature: float = 0.7,
        stop_at_eos: bool = False, missing_eos_penalty: float | None = None, advantage_estimator: Estimator = "gae",
        samples_per_prompt: int = 1, kl_estimator: KLEstimator = "k1", kl_in_reward: bool = True,
        kl_loss_coef: float = 0.0, kl_coef: float | None = None, reward_transform: RewardTransform = "none",
        bon_n: int | None = None, reference_samples_per_prompt: int = 0, jeffreys_beta: float = 1.0,
        anchor_ema: float = 0.0, adaptive_kl: bool | None = None, kl_target: float = 6.0, kl_horizon: int = 10000,
        gamma: float = 1.0, lam: float = 0.95, whiten_rewards: bool = False, ppo_epochs: int = 4,
        num_mini_batches: int = 1, micro_batch_size: int | None = None, loss_aggregation: Aggregation | None = None,
        loss_type: LossType | None = None, scale_rewards: ScaleRewards | None = None,
        dynamic_sampling: bool = False, dynamic_sampling_tries: int = 3,
        cliprange: float = 0.2, cliprange_high: float | None = None,
        importance_sampling_level: ImportanceSamplingLevel = "token",
        rollout_correction: RolloutCorrectionMode = "none", rollout_correction_cap: float = 3.0,
        cliprange_value: float = 0.2, vf_coef: float = 0.1, entropy_coef: float = 0.0,
        max_grad_norm: float | None = 1.0, ratio_threshold: float = 10.0, logprob_tolerance: float = 1e-2,
        compile_generation: bool = True, max_bad_steps: int = 5, learning_rate: float = 1.41e-5,
        weight_decay: float = 0.0, warmup_steps: int = 0, lr_schedule: Schedule = "constant", adam_eps: float = 1e-8,
        lora_r: int = 0, lora_alpha: int = 16, lora_target_modules: list[str] | None = None,
        gradient_checkpointing: bool = False, separate_critic: bool = False, fuse_first_forward: bool = True,
        sampling_seed: int = 0, init_seed: int = 0, export_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        resolved = engine.resolve_ppo_arguments(self.hparams)
        self.hparams.update(resolved)
        self.cfg = engine.EngineConfig.from_hparams(self.hparams)
        self.automatic_optimization = False
        self.strict_loading = False  # frozen models are not in checkpoints
        self.models = m = engine.load_rollout_models(self.hparams)
        self.tokenizer, self.policy, self.ref_model, self.anchor = m.tokenizer, m.policy, m.ref_model, m.anchor
        self.reward, self.score_norm = m.reward_module, m.score_norm  # registered: moved with the module
        beta = kl_loss_coef if kl_loss_coef > 0 else resolved["kl_coef"]
        self.kl_ctl = (AdaptiveKLController(beta, kl_target, kl_horizon) if resolved["adaptive_kl"]
                       else FixedKLController(beta))
        self.guard = NonFiniteGuard(max_bad_steps)
        self.ratio_skips, self.mismatch_warned = 0, False
        self.sampling = RolloutGenerator(sampling_seed)

    @property
    def rlhf_stage(self) -> str:
        """``ppo`` for GAE, else the estimator's name: the progress lines' prefix."""
        return "ppo" if self.hparams.advantage_estimator == "gae" else self.hparams.advantage_estimator

    def kl_coefs(self) -> tuple[float, float]:
        """beta of the KL in the reward and of the KL loss: the controller's value where each is on, else 0."""
        beta, hp = self.kl_ctl.value, self.hparams
        return (beta if hp.kl_in_reward else 0.0), (beta if hp.kl_loss_coef > 0 else 0.0)

    @property
    def optimizer_steps_per_batch(self) -> int:
        """Optimizer steps one training batch (one PPO iteration) takes, for progress totals."""
        return self.hparams.ppo_epochs * self.hparams.num_mini_batches

    def trained_lm(self) -> PreTrainedModel:
        return self.policy.lm

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ppo"] = {"kl_ctl": self.kl_ctl.state_dict(), "guard": self.guard.state_dict(), "ratio_skips":
                             self.ratio_skips, "generator": self.sampling.state(self.device, self.global_rank)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        require_own_checkpoint(self, checkpoint, marker="ppo")
        self.kl_ctl.load_state_dict(checkpoint["ppo"]["kl_ctl"])
        self.guard.load_state_dict(checkpoint["ppo"]["guard"])
        self.ratio_skips = checkpoint["ppo"]["ratio_skips"]
        self.sampling.load(checkpoint["ppo"]["generator"])

    def _generator(self) -> torch.Generator:
        return self.sampling.get(self.device, self.global_rank)

    def setup(self, stage: str) -> None:
        hp, data = self.hparams, getattr(getattr(self.trainer, "datamodule", None), "hparams", None)
        prompt_max, batch_size = getattr(data, "prompt_max_tokens", None), getattr(data, "batch_size", None)
        if prompt_max:
            self.require_context(prompt_max + hp.response_max_tokens, f"prompt_max_tokens ({prompt_max}) + "
                                 f"response_max_tokens ({hp.response_max_tokens})", "shorten prompts or responses")
        if batch_size is not None:
            engine.check_batch_division(batch_size * hp.samples_per_prompt, hp.num_mini_batches, hp.micro_batch_size)
        require_same_tokenizer(self, self.tokenizer)

    def configure_optimizers(self) -> dict:
        return configure_adamw(self, self.policy, self.optimizer_steps_per_batch)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # gradients are unscaled here under AMP (Lightning #18089), so the norm is the real one
        if self.hparams.max_grad_norm:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm")

    def rollout(self, queries: torch.Tensor, query_mask: torch.Tensor, timings: dict[str, float]):
        """Steps 1-4 on (b, q) prompts: ``engine.collect_rollout``; sharded models gathered once for it."""
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        refill = train_prompt_refill(data, self._generator(), self.device) if self.hparams.dynamic_sampling else None
        with gathered(self.policy, self.ref_model, self.anchor):
            return engine.collect_rollout(self.models, self.cfg, queries, query_mask, self.kl_coefs()[0],
                                          self._generator(), timings, refill)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        timings: dict[str, float] = {}
        ro, first = self.rollout(batch["input_ids"], batch["attention_mask"], timings)
        if not all_ranks_true(engine.rollout.is_finite(ro), self.device):
            self.guard.bad(self.global_step, "non-finite score, KL or value in the rollout")
            self.log("guard/skipped_steps", float(self.guard.skipped))
            return
        diff = timings.get("rollout/logprob_diff_mean", 0.0)
        if diff > self.hparams.logprob_tolerance and not self.mismatch_warned:
            self.mismatch_warned = True
            rank_zero_warn(engine.logprob_mismatch_warning(self.global_step, diff, self.hparams.logprob_tolerance))
        block = getattr(self.trainer.strategy, "block_backward_sync", None)
        optim = engine.Optimization(self.optimizers(), self.lr_schedulers(), self.manual_backward, block or nullcontext)
        t0 = engine.rollout.clock(self.device)
        reward_beta, loss_beta = self.kl_coefs()
        result = engine.ppo_update(self.policy, ro, self.cfg, optim, self._generator(), self.guard, self.global_step,
                                   loss_beta, first=first)
        timings["time/update"] = engine.rollout.clock(self.device) - t0
        self.ratio_skips += result.ratio_skips
        if self.anchor is not None:
            ema_update_(self.anchor.parameters(), self.policy.lm.parameters(), self.hparams.anchor_ema)
        logs = engine.rollout_stats(ro, reward_beta or loss_beta, self.tokenizer.eos_token_id,
                             self.hparams.samples_per_prompt) | {
            "objective/kl_coef": torch.tensor(self.kl_ctl.value),
            "guard/skipped_steps": torch.tensor(float(self.guard.skipped)),
            "guard/ratio_skips": torch.tensor(float(self.ratio_skips)),
            "lr": torch.tensor(self.optimizers().optimizer.param_groups[0]["lr"])}
        self.log_dict(logs | result.stats | {k: torch.tensor(v) for k, v in timings.items()},
                      on_step=True, on_epoch=False, batch_size=ro.queries.shape[0],
                      sync_dist=self.trainer.world_size > 1)
        self.kl_ctl.update(float(global_mean(ro.kl.sum(-1))), ro.queries.shape[0] * self.trainer.world_size)

    def sample_rows(self, prompts: list[str], max_new_tokens: int, temperature: float, seed: int) -> list[dict]:
        """Rows for the sample table: ``engine.sample_table_rows``."""
        return engine.sample_table_rows(self.models, self.cfg, prompts, max_new_tokens, temperature, seed)
