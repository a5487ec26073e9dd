"""``PPOModule``: RLHF with PPO, or a critic-free sibling, and a KL penalty to a frozen reference.

One ``training_step`` is one iteration on a batch of prompts (manual optimization):
1. rollout (``samples_per_prompt`` responses per prompt), 2. score, 3. log-probs and values,
4. per-token rewards and the advantages of ``advantage_estimator`` (``modules.ppo_rollout``),
5. ``ppo_epochs`` x mini-batches x micro-batches of clipped updates (``modules.ppo_update``),
6. KL control. ``global_step`` counts optimizer steps: ``ppo_epochs * num_mini_batches`` per iteration.

``advantage_estimator: gae`` is PPO with a value head; ``rloo``, ``grpo``, ``dr_grpo``,
``reinforce_pp``, ``reinforce_pp_baseline`` and ``remax`` have no value head at all and share
everything else: sampling, scoring, KL, logging, resume, guards, DDP and export.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from transformers import PreTrainedModel

from lightning_rlhf.distributed import all_ranks_true, global_mean
from lightning_rlhf.errors import ConfigError
from lightning_rlhf.export import export_at_fit_end, model_context
from lightning_rlhf.generation import generate_texts
from lightning_rlhf.guard import NonFiniteGuard
from lightning_rlhf.models.loading import disable_dropout, load_causal_lm, load_tokenizer
from lightning_rlhf.models.lora import is_lora, policy_and_reference
from lightning_rlhf.models.value_head import PolicyWithValueHead
from lightning_rlhf.modules.checks import require_own_checkpoint, require_same_tokenizer
from lightning_rlhf.modules.ppo_rollout import clock, collect_rollout
from lightning_rlhf.modules.ppo_update import check_batch_division, ppo_update
from lightning_rlhf.optim import Schedule, adamw_with_schedule, decay_groups
from lightning_rlhf.rewards import ScoreNormalizer, build_reward
from lightning_rlhf.rl.advantages import explained_variance, masked_mean
from lightning_rlhf.rl.aggregation import AGGREGATIONS, Aggregation, resolve_aggregation
from lightning_rlhf.rl.anchor import ema_update_
from lightning_rlhf.rl.estimators import (
    SEQUENCE_LEVEL,
    Estimator,
    check_estimator,
    group_mean_baseline,
    group_statistics,
    sequence_advantages,
)
from lightning_rlhf.rl.kl import AdaptiveKLController, FixedKLController, KLEstimator
from lightning_rlhf.rl.masking import ends_with_eos
from lightning_rlhf.rl.reward_transforms import RewardTransform, bon_kl_coef, check_reward_transform

FROZEN_PREFIXES = ("ref_model.", "reward.")


class PPOModule(L.LightningModule):
    """Policy-gradient fine-tuning of a causal LM against a reward, with a KL penalty to a frozen
    reference: PPO with a value head (``advantage_estimator: gae``) or a critic-free estimator.

    Args:
        policy_name_or_path: Hub id or folder of the policy (the SFT export); ignored with
            policy_config.
        policy_config: Config fields of a randomly initialised policy (tests, benchmarks).
        tokenizer_name_or_path: Tokenizer of the policy; defaults to policy_name_or_path.
        ref_name_or_path: Frozen reference; defaults to the policy's source. It is reloaded from
            its source on resume instead of being stored in checkpoints.
        reward_model: Hub id or folder of a sequence classifier scoring prompt + response.
        reward_fn: Import path ``pkg.module:function`` of a reward function
            ``(prompts, responses) -> (b,)``; used instead of reward_model.
        positive_label: Name of the classifier's positive label in ``id2label``.
        reward_output: ``logit`` or ``probability`` of the positive label.
        reward_batch_size: Texts per reward-classifier forward.
        normalize_scores: Shift and scale scores by mean/std of the first rollout batch.
        score_clip: Clip (normalised) scores to [-score_clip, score_clip].
        response_min_tokens: Shortest response; each sample's length is drawn from
            [response_min_tokens, response_max_tokens] (equal values give a fixed length).
        response_max_tokens: Longest response (``max_new_tokens``).
        temperature: Sampling temperature; also divides logits for every log-prob.
        stop_at_eos: End responses at EOS and mask everything after it.
        missing_eos_penalty: With stop_at_eos, subtract this from the scores of responses that
            reached ``response_max_tokens`` without EOS. Responses cut shorter by a length range
            are not penalised: the length draw, not the policy, ended them.
        advantage_estimator: ``gae`` (PPO with a value head), ``rloo``, ``grpo``, ``dr_grpo``,
            ``reinforce_pp``, ``reinforce_pp_baseline`` or ``remax`` (``rl.estimators``; no value
            head, no value forward, no value loss).
        samples_per_prompt: k responses per prompt (one prefill, KV cache repeated); each rollout
            holds batch_size * k samples. The group estimators need k >= 2.
        kl_estimator: ``k1`` (log-ratio) or ``k3``, for the KL in the reward.
        reward_transform: ``none``; ``quantile`` (vBoN: the reward is log F̂(score), F̂ the
            empirical CDF of ``reference_samples_per_prompt`` fresh reference samples of the
            same prompt, with ``kl_coef`` 1/(bon_n - 1), whose optimum is Best-of-bon_n); or
            ``jbond`` (J-BOND: -log 16 when a sample loses to both of 2 samples of an EMA
            anchor, the reward's KL taken to the anchor with coefficient 1). ``rl.reward_transforms``.
        bon_n: N of the Best-of-N a reward transform aims at (2 for ``jbond``).
        reference_samples_per_prompt: m reference (or anchor) samples per prompt and iteration
            behind a reward transform's CDF; sampled and scored each iteration, so they cost
            m / samples_per_prompt times the policy's sampling and scoring.
        jeffreys_beta: BOND's Jeffreys weight: the loss is ``jeffreys_beta * policy-gradient
            loss + (1 - jeffreys_beta) * NLL of the best of the first bon_n reference samples``
            (the forward KL's gradient). 1 = backward KL only; J-BOND uses 0.5.
        anchor_ema: η > 0 keeps an anchor, an EMA of the policy updated after every iteration
            (``θ_a ← (1-η) θ_a + η θ``), which the reward transform samples and the reward's KL
            is taken to (the frozen reference's KL is logged as ``objective/kl_ref``). J-BOND.
        kl_in_reward: Put beta * KL in the reward (per token; for ``rloo``/``grpo``/``dr_grpo``
            each sequence's summed KL is taken off its score, without gradient).
        kl_loss_coef: > 0 puts a differentiable k3 KL term in the loss instead (GRPO's way), with
            this fixed coefficient (as GRPO and verl), adapted only with ``adaptive_kl: true``;
            needs ``kl_in_reward: false``.
        kl_coef: Initial (or fixed) KL coefficient beta in the reward. Default (null): 0.2, or
            1/(bon_n - 1) with a reward transform (which fixes it there).
        adaptive_kl: Adapt the KL coefficient towards kl_target (Ziegler et al. 2019). Default
            (null): adaptive for the KL in the reward, fixed for the KL loss (``kl_loss_coef``)
            and with a reward transform; true or false applies to whichever is on.
        kl_target: Target KL per sequence, in nats.
        kl_horizon: Horizon of the adaptive controller, in samples.
        gamma: Discount.
        lam: GAE lambda.
        whiten_rewards: Whiten per-token rewards (keeping their mean) before GAE.
        ppo_epochs: Passes over each rollout batch.
        num_mini_batches: Optimizer steps per pass.
        micro_batch_size: Rows per forward/backward (gradient accumulation); None = whole mini-batch.
            It must divide the mini-batch, as num_mini_batches must divide the batch.
        loss_aggregation: How token losses add up over a mini-batch (``rl.aggregation``):
            ``token_mean``, ``seq_mean_token_mean`` or ``seq_mean_token_sum_norm``. Default
            (null): ``seq_mean_token_sum_norm`` for ``dr_grpo`` (the constant divisor is half of
            Dr. GRPO), ``token_mean`` otherwise; another choice is kept and noted in one
            line. Whichever, the update does not depend on micro-batching or the
            number of processes.
        cliprange: Policy ratio clip.
        cliprange_value: Value clip.
        vf_coef: Weight of the value loss.
        entropy_coef: Weight of the entropy bonus.
        max_grad_norm: Clip the (unscaled) gradient norm; None to disable.
        ratio_threshold: Skip a mini-batch whose mean policy/old ratio exceeds this (TRL's
            ``ratio_threshold``).
        logprob_tolerance: Warn (once) when the sampler's and the trainer's log-probs of the
            sampled tokens differ by more than this on average (nats per token; logged every
            iteration as ``rollout/logprob_diff_mean``/``_max``). fp32 agrees to about 1e-6.
        compile_generation: Sample with the compiled static-cache decode step
            (``generation.static_step``: the model's own forward on transformers' ``StaticCache``,
            one graph per token, compiled once per run, about 30 s on a 2-core CPU, then reused
            as the weights change); same tokens as the eager loop for the same generator state.
            Models it cannot compile fall back to the eager loop with a one-line notice.
        max_bad_steps: Stop with an error after this many consecutive non-finite steps.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay, on matrices only (not on biases and norms).
        warmup_steps: Linear warmup, in optimizer steps.
        lr_schedule: Decay after warmup: constant, linear or cosine.
        adam_eps: AdamW epsilon.
        lora_r: LoRA rank; > 0 trains adapters only, and the reference is the policy with its
            adapter disabled (no second copy of the weights). Needs ``pip install 'lightning-rlhf[lora]'``.
        lora_alpha: LoRA scaling numerator.
        lora_target_modules: Module names to adapt; None = peft's default for the architecture.
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        separate_critic: Train a separate value network (a copy of the initial policy) instead of a
            value head on the policy's trunk; slower, as in TRL's current PPO.
        fuse_first_forward: With one mini-batch and no micro-batching, reuse the rollout's
            policy forward for the first update instead of running it twice.
        sampling_seed: Seed of the rollout generator (offset by the process rank).
        init_seed: Seed for random initialisation from policy_config.
        export_dir: Folder for the policy's ``save_pretrained`` export; default ``<log_dir>/export``.
    """

    @property
    def rlhf_stage(self) -> str:
        """``ppo`` for GAE, else the estimator's name: the progress lines' prefix."""
        estimator = self.hparams.advantage_estimator
        return "ppo" if estimator == "gae" else estimator

    @property
    def reward_kl_coef(self) -> float:
        """beta of the KL in the reward: the controller's value, or 0 when the KL is not there."""
        return self.kl_ctl.value if self.hparams.kl_in_reward else 0.0

    @property
    def loss_kl_coef(self) -> float:
        """Coefficient of the KL term in the loss: the controller's value, or 0 when off."""
        return self.kl_ctl.value if self.hparams.kl_loss_coef > 0 else 0.0

    @property
    def optimizer_steps_per_batch(self) -> int:
        """Optimizer steps one training batch (one PPO iteration) takes, for progress totals."""
        return self.hparams.ppo_epochs * self.hparams.num_mini_batches

    def __init__(
        self,
        policy_name_or_path: str | None = "gpt2",
        policy_config: dict[str, Any] | None = None,
        tokenizer_name_or_path: str | None = None,
        ref_name_or_path: str | None = None,
        reward_model: str | None = "lvwerra/distilbert-imdb",
        reward_fn: str | None = None,
        positive_label: str = "POSITIVE",
        reward_output: Literal["logit", "probability"] = "logit",
        reward_batch_size: int = 64,
        normalize_scores: bool = False,
        score_clip: float | None = None,
        response_min_tokens: int = 16,
        response_max_tokens: int = 16,
        temperature: float = 0.7,
        stop_at_eos: bool = False,
        missing_eos_penalty: float | None = None,
        advantage_estimator: Estimator = "gae",
        samples_per_prompt: int = 1,
        kl_estimator: KLEstimator = "k1",
        kl_in_reward: bool = True,
        kl_loss_coef: float = 0.0,
        kl_coef: float | None = None,
        reward_transform: RewardTransform = "none",
        bon_n: int | None = None,
        reference_samples_per_prompt: int = 0,
        jeffreys_beta: float = 1.0,
        anchor_ema: float = 0.0,
        adaptive_kl: bool | None = None,
        kl_target: float = 6.0,
        kl_horizon: int = 10000,
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_rewards: bool = False,
        ppo_epochs: int = 4,
        num_mini_batches: int = 1,
        micro_batch_size: int | None = None,
        loss_aggregation: Aggregation | None = None,
        cliprange: float = 0.2,
        cliprange_value: float = 0.2,
        vf_coef: float = 0.1,
        entropy_coef: float = 0.0,
        max_grad_norm: float | None = 1.0,
        ratio_threshold: float = 10.0,
        logprob_tolerance: float = 1e-2,
        compile_generation: bool = True,
        max_bad_steps: int = 5,
        learning_rate: float = 1.41e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_schedule: Schedule = "constant",
        adam_eps: float = 1e-8,
        lora_r: int = 0,
        lora_alpha: int = 16,
        lora_target_modules: list[str] | None = None,
        gradient_checkpointing: bool = False,
        separate_critic: bool = False,
        fuse_first_forward: bool = True,
        sampling_seed: int = 0,
        init_seed: int = 0,
        export_dir: str | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= response_min_tokens <= response_max_tokens:
            raise ConfigError(f"response length range [{response_min_tokens}, {response_max_tokens}] is empty; "
                              f"set 1 <= response_min_tokens <= response_max_tokens")
        if (reward_model is None) == (reward_fn is None):
            raise ConfigError("set exactly one of reward_model (a classifier) and reward_fn (an import path); "
                              "to use reward_fn, also set reward_model: null")
        check_estimator(advantage_estimator, samples_per_prompt)
        if kl_in_reward and kl_loss_coef > 0:
            raise ConfigError("the KL is both in the reward (kl_in_reward: true) and in the loss (kl_loss_coef > 0); "
                              "choose one: kl_in_reward: false for GRPO's KL loss, or kl_loss_coef: 0")
        if kl_loss_coef < 0:
            raise ConfigError(f"kl_loss_coef must be >= 0, not {kl_loss_coef}")
        if separate_critic and advantage_estimator != "gae":
            raise ConfigError(f"separate_critic trains a value network, which '{advantage_estimator}' does not use; "
                              "remove separate_critic or use advantage_estimator: gae")
        if loss_aggregation is not None and loss_aggregation not in AGGREGATIONS:
            raise ConfigError(f"loss_aggregation must be one of {', '.join(AGGREGATIONS)}, not '{loss_aggregation}'")
        if lora_r > 0 and ref_name_or_path is not None:
            raise ConfigError("with lora_r > 0 the reference is the policy without its adapter; "
                              "remove ref_name_or_path")
        if kl_coef is None:
            n = 2 if reward_transform == "jbond" else bon_n
            kl_coef = 0.2 if reward_transform == "none" else bon_kl_coef(n) if n and n >= 2 else float("nan")
        check_reward_transform(reward_transform, bon_n, reference_samples_per_prompt, kl_coef, anchor_ema,
                               jeffreys_beta, kl_estimator)
        if reward_transform != "none" and (lora_r > 0 or adaptive_kl or kl_loss_coef > 0 or not kl_in_reward):
            raise ConfigError(f"reward_transform {reward_transform} fixes a KL coefficient in the reward against a "
                              f"separate reference model; set kl_in_reward: true, adaptive_kl: false, "
                              f"kl_loss_coef: 0 and lora_r: 0")
        self.save_hyperparameters()
        self.hparams.kl_coef = kl_coef
        own = resolve_aggregation(advantage_estimator, None)
        self.hparams.loss_aggregation = loss_aggregation or own
        if self.hparams.loss_aggregation != own:
            rank_zero_info(f"note: advantage_estimator {advantage_estimator} with loss_aggregation "
                           f"{loss_aggregation} (its own is {own})")
        if adaptive_kl is None:
            adaptive_kl = kl_loss_coef == 0 and reward_transform == "none"
        self.hparams.adaptive_kl = adaptive_kl
        self.automatic_optimization = False
        self.strict_loading = False  # frozen models are not in checkpoints
        self.tokenizer = load_tokenizer(tokenizer_name_or_path or policy_name_or_path)
        lm, self.ref_model = policy_and_reference(policy_name_or_path, policy_config, ref_name_or_path, init_seed,
                                                  lora_r, lora_alpha, lora_target_modules, gradient_checkpointing)
        critic = load_causal_lm(policy_name_or_path, policy_config, init_seed) if separate_critic else None
        self.policy = PolicyWithValueHead(lm, critic, value_head=advantage_estimator == "gae")
        disable_dropout(self.policy)
        self.anchor = copy.deepcopy(lm).requires_grad_(False) if anchor_ema > 0 else None
        self.reward, self.reward_call = build_reward(reward_model, reward_fn, positive_label,
                                                     reward_output, reward_batch_size)
        self.score_norm = ScoreNormalizer(normalize_scores, score_clip)
        beta = kl_loss_coef if kl_loss_coef > 0 else kl_coef
        self.kl_ctl = (AdaptiveKLController(beta, kl_target, kl_horizon) if self.hparams.adaptive_kl
                       else FixedKLController(beta))
        self.guard = NonFiniteGuard(max_bad_steps)
        self.ratio_skips = 0
        self.mismatch_warned = False
        self.generator: torch.Generator | None = None
        self._pending_generator_state: torch.Tensor | None = None

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().state_dict(*args, **kwargs)
        return {k: v for k, v in state.items() if not k.startswith(FROZEN_PREFIXES)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ppo"] = {
            "kl_ctl": self.kl_ctl.state_dict(),
            "guard": self.guard.state_dict(),
            "ratio_skips": self.ratio_skips,
            "generator": self._generator().get_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        require_own_checkpoint(self, checkpoint, marker="ppo")
        self.kl_ctl.load_state_dict(checkpoint["ppo"]["kl_ctl"])
        self.guard.load_state_dict(checkpoint["ppo"]["guard"])
        self.ratio_skips = checkpoint["ppo"]["ratio_skips"]
        self._pending_generator_state = checkpoint["ppo"]["generator"]

    def _generator(self) -> torch.Generator:
        if self.generator is None or self.generator.device != self.device:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(self.hparams.sampling_seed + self.global_rank)
        if self._pending_generator_state is not None:
            self.generator.set_state(self._pending_generator_state.cpu())
            self._pending_generator_state = None
        return self.generator

    # -- setup -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        context = model_context(self.policy.lm)
        prompt_max = getattr(getattr(dm, "hparams", None), "prompt_max_tokens", None)
        if context and prompt_max and prompt_max + self.hparams.response_max_tokens > context:
            raise ConfigError(
                f"prompt_max_tokens ({prompt_max}) + response_max_tokens "
                f"({self.hparams.response_max_tokens}) exceeds the policy's context of {context} "
                f"positions; shorten prompts or responses"
            )
        batch_size = getattr(getattr(dm, "hparams", None), "batch_size", None)
        if batch_size is not None:
            check_batch_division(batch_size * self.hparams.samples_per_prompt, self.hparams.num_mini_batches,
                                 self.hparams.micro_batch_size)
        require_same_tokenizer(self, self.tokenizer)

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        per_iter = hp.ppo_epochs * hp.num_mini_batches
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else int(
            self.trainer.estimated_stepping_batches) * per_iter
        return adamw_with_schedule(decay_groups(self.policy, hp.weight_decay), hp.learning_rate, hp.weight_decay,
                                   hp.warmup_steps, total, hp.lr_schedule, eps=hp.adam_eps)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # gradients are unscaled here under AMP (Lightning #18089), so the norm is the real one
        if self.hparams.max_grad_norm:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.max_grad_norm,
                                gradient_clip_algorithm="norm")

    # -- the iteration -----------------------------------------------------------------------
    def rollout(self, queries: torch.Tensor, query_mask: torch.Tensor, timings: dict[str, float]):
        """Steps 1-4 on (b, q) prompts: ``modules.ppo_rollout.collect_rollout``."""
        return collect_rollout(self, queries, query_mask, timings)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        timings: dict[str, float] = {}
        ro, first = self.rollout(batch["input_ids"], batch["attention_mask"], timings)
        checked = [x for x in (ro.scores, ro.kl, ro.values) if x is not None]
        if not all_ranks_true(all(bool(torch.isfinite(x).all()) for x in checked), self.device):
            self.guard.bad(self.global_step, "non-finite score, KL or value in the rollout")
            self.log("guard/skipped_steps", float(self.guard.skipped))
            return
        self._check_logprob_mismatch(timings.get("rollout/logprob_diff_mean", 0.0))
        t0 = clock(self.device)
        stats = ppo_update(self, ro, first)
        timings["time/update"] = clock(self.device) - t0
        if self.anchor is not None:
            ema_update_(self.anchor.parameters(), self.policy.lm.parameters(), self.hparams.anchor_ema)
        self.log_dict(self._rollout_logs(ro) | stats | {k: torch.tensor(v) for k, v in timings.items()},
                      on_step=True, on_epoch=False, batch_size=ro.queries.shape[0],
                      sync_dist=self.trainer.world_size > 1)
        n_samples = ro.queries.shape[0] * self.trainer.world_size
        self.kl_ctl.update(float(global_mean(ro.kl.sum(-1))), n_samples)

    def _check_logprob_mismatch(self, diff_mean: float) -> None:
        if diff_mean > self.hparams.logprob_tolerance and not self.mismatch_warned:
            self.mismatch_warned = True
            rank_zero_warn(
                f"step {self.global_step}: the sampler's log-probs differ from the trainer's by {diff_mean:.2g} nats "
                f"per token on average (logprob_tolerance {self.hparams.logprob_tolerance:g}), so PPO's first ratio "
                f"is not 1. Likely causes: low-precision autocast (bf16/16-mixed) in the sampler or trunk, weights "
                f"changed between sampling and the forward, or a sampler that is not the policy; watch "
                f"rollout/logprob_diff_mean")

    def _rollout_logs(self, ro) -> dict[str, torch.Tensor]:
        """What the rollout says, in TRL's names where they exist."""
        kl_per_seq = ro.kl.sum(-1)
        rlhf_reward = ro.scores - (self.reward_kl_coef or self.loss_kl_coef) * kl_per_seq
        mask = ro.response_mask.float()
        adv_mean = masked_mean(ro.advantages, mask)
        logs = {
            "reward/mean": rlhf_reward.mean(),
            "reward/std": rlhf_reward.std(),
            "reward/score": ro.scores.mean(),
            "reward/score_std": ro.scores.std(),
            "objective/kl": kl_per_seq.mean(),
            "objective/kl_coef": torch.tensor(self.kl_ctl.value),
            "advantages/mean": adv_mean,
            "advantages/std": masked_mean((ro.advantages - adv_mean) ** 2, mask).sqrt(),
            "rollout/response_length": mask.sum(-1).mean(),
            "rollout/eos_fraction": ends_with_eos(ro.responses, ro.response_mask,
                                                  self.tokenizer.eos_token_id).float().mean(),
            "guard/skipped_steps": torch.tensor(float(self.guard.skipped)),
            "guard/ratio_skips": torch.tensor(float(self.ratio_skips)),
            "lr": torch.tensor(self.optimizers().optimizer.param_groups[0]["lr"]),
        }
        if ro.values is not None:
            logs["value/explained_variance"] = explained_variance(ro.values, ro.returns, ro.response_mask)
        if self.hparams.samples_per_prompt > 1:
            logs["reward/group_std"], logs["frac_reward_zero_std"] = group_statistics(
                ro.scores, self.hparams.samples_per_prompt)
        return logs

    # -- helpers -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample_rows(
        self, prompts: list[str], max_new_tokens: int, temperature: float, seed: int
    ) -> list[dict]:
        """Rows for the sample table: prompt, response and its (normalised) score.

        With ``samples_per_prompt`` k > 1 the k responses of a prompt follow each other (the
        prompt shown on the first), with the advantage of each score within its group (the KL
        aside): the estimator's for ``rloo``/``grpo``/``dr_grpo``, score minus the group mean otherwise.
        """
        k = self.hparams.samples_per_prompt
        repeated = [p for p in prompts for _ in range(k)]
        texts = generate_texts(self.policy.lm, self.tokenizer, repeated, max_new_tokens, temperature, seed,
                               stop_at_eos=self.hparams.stop_at_eos)
        scores = self.score_norm(self.reward_call(repeated, texts).to(self.device))
        rows = [{"prompt": p, "response": t, "reward": float(s)}
                for p, t, s in zip(repeated, texts, scores.tolist(), strict=True)]
        if k == 1:
            return rows
        estimator = self.hparams.advantage_estimator
        advantages = (sequence_advantages(estimator, scores, k) if estimator in SEQUENCE_LEVEL
                      else scores - group_mean_baseline(scores, k))
        for i, (row, adv) in enumerate(zip(rows, advantages.tolist(), strict=True)):
            row["prompt"] = row["prompt"] if i % k == 0 else ""
            row["advantage"] = adv
        return rows

    def exportable_policy(self) -> PreTrainedModel:
        """The policy as a plain causal LM (no value head; LoRA merged into a copy)."""
        lm = self.policy.lm
        return copy.deepcopy(lm).merge_and_unload() if is_lora(lm) else lm

    def on_fit_end(self) -> None:
        lm = self.exportable_policy() if self.trainer.is_global_zero else self.policy.lm
        export_at_fit_end(self.trainer, self.hparams.export_dir, lm, self.tokenizer,
                          "the policy (without value head) and tokenizer")
