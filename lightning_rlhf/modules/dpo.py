"""``DPOModule``: preference optimisation of a causal LM against a frozen reference, no reward model.

``loss_type: simpo`` needs no reference: none is loaded and none runs forward.

Automatic optimization: the Trainer does AMP, gradient accumulation, clipping, checkpoints and
DDP. Each batch of b pairs runs one policy forward over the 2b prompt + response rows (chosen
then rejected) and one reference forward without grad; the loss is ``rl.dpo.dpo_loss``, the
mean over the batch's pairs (so DDP's gradient average and the Trainer's accumulation give the
mean over all pairs of equal-sized batches, as for every loss type). Log-probs use the same
path as PPO (left-padded prompts, fp32 LM head, temperature 1).
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanMetric
from transformers import PreTrainedModel

from lightning_rlhf.data.preferences import pairs_temperature
from lightning_rlhf.errors import ConfigError
from lightning_rlhf.generation import generate_texts
from lightning_rlhf.models.loading import disable_dropout, load_causal_lm, load_tokenizer
from lightning_rlhf.models.lora import apply_lora, is_lora, policy_and_reference
from lightning_rlhf.models.value_head import response_logprobs
from lightning_rlhf.modules.checks import require_own_checkpoint, require_same_tokenizer
from lightning_rlhf.modules.policy_stage import PolicyStage
from lightning_rlhf.optim import Schedule, configure_adamw
from lightning_rlhf.rl.dpo import (
    BONBON_ALPHA,
    DPO_LOSSES,
    REFERENCE_FREE,
    SIMPO_GAMMA,
    DPOLossType,
    bonbon_margin,
    dpo_loss,
    sequence_logprobs,
)


class DPOModule(PolicyStage):
    """Direct preference optimisation (Rafailov et al. 2023) and its IPO, hinge, BoNBoN and SimPO variants.

    Args:
        policy_name_or_path: Hub id or folder of the policy (the SFT export); null with policy_config.
        policy_config: Config fields of a randomly initialised policy (tests).
        tokenizer_name_or_path: Tokenizer of the policy; defaults to policy_name_or_path.
        ref_name_or_path: Frozen reference; defaults to the policy's source (reloaded on resume,
            not stored in checkpoints).
        beta: Strength of the implicit KL constraint (TRL's default 0.1); not used by ``bonbon``,
            whose β* = 1 / (2 (n - 1) H_{n-1}) comes from n.
        loss_type: ``sigmoid`` (DPO), ``ipo``, ``hinge``, ``bonbon`` (BoNBoN: pairs of the best
            against the worst of n reference samples, ``lightning-rlhf-preferences --pairs
            best_worst``; logs ``train/sft_loss`` and ``train/ipo_loss``, its two unweighted parts)
            or ``simpo`` (SimPO: length-averaged policy log-probs and a target margin, no reference
            model; ``beta`` scales the averaged log-probs, the SimPO paper uses 2 to 2.5, TRL 0.1).
        label_smoothing: Assumed share of flipped labels (conservative DPO; sigmoid and simpo).
        simpo_gamma: ``simpo``: γ, the target margin between the chosen and rejected implicit
            rewards β ā (TRL's ``CPOConfig.simpo_gamma``, default 0.5).
        ipo_length_normalize: ``ipo``: average the log-probs of policy and reference over each
            response's tokens instead of summing them, as TRL's ``loss_type="ipo"`` does; False
            (default) is the paper's IPO on sequence log-probs.
        bonbon_alpha: ``bonbon``: weight α of the SFT term (summed NLL of the best response).
        bon_n: ``bonbon``: the n of the pairs, which sets the target margin (n - 1) H_{n-1}.
            None (default) reads it from the pairs' ``samples_per_prompt``; a value is checked
            against it (it is required only with data that does not come from ``IMDBDataModule``).
        temperature: Log-probs of policy and reference are those of ``softmax(logits / T)``. 1
            is DPO's usual choice; ``bonbon`` needs the temperature its pairs were sampled at (the
            pairs' ``settings.json`` says it; a mismatch is an error), because the Best-of-n policy it
            imitates is that of the tempered reference: at 1, the SFT term on 0.7-temperature best
            samples sharpens the policy and its 0.7-temperature samples lose their diversity.
        precompute_ref_logprobs: Score every pair under the reference once at the start of fit
            (train and validation splits), then free the reference: one forward fewer per step
            and one model fewer in memory. Recomputed on resume (the reference is not checkpointed).
            Not with ``simpo``, which has no reference.
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW weight decay on weight matrices.
        warmup_steps: Linear warmup steps.
        lr_schedule: Decay after warmup: cosine, linear or constant.
        lora_r: > 0 trains LoRA adapters only; the reference is the policy with its adapter disabled.
        lora_alpha: LoRA scaling numerator.
        lora_target_modules: Module names to adapt; None = peft's default.
        init_seed: Seed for random initialisation from policy_config.
        export_dir: Folder for the policy's ``save_pretrained`` export; default ``<log_dir>/export``.
    """

    rlhf_stage = "dpo"

    def __init__(
        self,
        policy_name_or_path: str | None = "gpt2",
        policy_config: dict[str, Any] | None = None,
        tokenizer_name_or_path: str | None = None,
        ref_name_or_path: str | None = None,
        beta: float = 0.1,
        loss_type: DPOLossType = "sigmoid",
        label_smoothing: float = 0.0,
        bonbon_alpha: float = BONBON_ALPHA,
        bon_n: int | None = None,
        simpo_gamma: float = SIMPO_GAMMA,
        ipo_length_normalize: bool = False,
        temperature: float = 1.0,
        precompute_ref_logprobs: bool = False,
        learning_rate: float = 5e-6,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_schedule: Schedule = "constant",
        lora_r: int = 0,
        lora_alpha: int = 16,
        lora_target_modules: list[str] | None = None,
        init_seed: int = 0,
        export_dir: str | None = None,
    ) -> None:
        super().__init__()
        if loss_type not in DPO_LOSSES:
            raise ConfigError(f"loss_type must be one of {', '.join(DPO_LOSSES)}, not '{loss_type}'")
        if beta <= 0:
            raise ConfigError(f"beta must be > 0, not {beta}")
        if not 0 <= bonbon_alpha <= 1:
            raise ConfigError(f"bonbon_alpha must be in [0, 1], not {bonbon_alpha}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, not {temperature}")
        if bon_n is not None and loss_type != "bonbon":
            raise ConfigError(f"bon_n applies to loss_type bonbon only, not to '{loss_type}'; remove it")
        if bon_n is not None:
            bonbon_margin(bon_n)  # a whole number >= 2
        if label_smoothing and loss_type not in ("sigmoid", "simpo"):
            raise ConfigError(f"label_smoothing applies to the sigmoid loss only (and to simpo), not to '{loss_type}'")
        if ipo_length_normalize and loss_type != "ipo":
            raise ConfigError(f"ipo_length_normalize applies to loss_type ipo only, not to '{loss_type}'; remove it")
        reference_free = loss_type in REFERENCE_FREE
        if reference_free and ref_name_or_path is not None:
            raise ConfigError(f"loss_type {loss_type} uses no reference model; remove ref_name_or_path")
        if reference_free and precompute_ref_logprobs:
            raise ConfigError(f"loss_type {loss_type} uses no reference model, so there are no reference log-probs "
                              f"to precompute; remove precompute_ref_logprobs")
        if lora_r > 0 and ref_name_or_path is not None:
            raise ConfigError("with lora_r > 0 the reference is the policy without its adapter; "
                              "remove ref_name_or_path")
        self.save_hyperparameters()
        self.strict_loading = False  # the frozen reference is not in checkpoints
        self.tokenizer = load_tokenizer(tokenizer_name_or_path or policy_name_or_path)
        if reference_free:  # the policy alone: no reference weights in memory
            self.policy, self.ref_model = load_causal_lm(policy_name_or_path, policy_config, init_seed), None
            if lora_r > 0:
                self.policy = apply_lora(self.policy, lora_r, lora_alpha, lora_target_modules)
        else:
            self.policy, self.ref_model = policy_and_reference(policy_name_or_path, policy_config, ref_name_or_path,
                                                               init_seed, lora_r, lora_alpha, lora_target_modules)
        disable_dropout(self.policy)  # log-ratios of the same text must not depend on dropout draws
        self.ref_cache: dict[str, torch.Tensor] = {}  # split -> (n, 2) chosen/rejected reference log-probs
        self.bon_n = bon_n  # bonbon: resolved against the pairs in setup
        parts = ("sft_loss", "ipo_loss") if loss_type == "bonbon" else ()
        self.val_metrics = {k: MeanMetric() for k in ("loss", "accuracies", "margins", *parts)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        require_own_checkpoint(self, checkpoint)

    def setup(self, stage: str) -> None:
        require_same_tokenizer(self, self.tokenizer)
        dm = getattr(self.trainer, "datamodule", None)
        longest = getattr(getattr(dm, "hparams", None), "max_length", None)
        self.require_context(longest, f"data max_length ({longest})", "set data.max_length <= {context}")
        if self.hparams.loss_type == "bonbon":
            self.bon_n = self._pairs_n(dm)
            sampled_at = pairs_temperature(getattr(getattr(dm, "hparams", None), "data_path", None))
            if sampled_at is not None and sampled_at != self.hparams.temperature:
                raise ConfigError(f"the bonbon pairs were sampled at temperature {sampled_at} but "
                                  f"model.init_args.temperature is {self.hparams.temperature}; set it to {sampled_at}")

    def _pairs_n(self, dm: Any) -> int:
        """The n of the best/worst-of-n pairs: the data's ``samples_per_prompt``, which ``bon_n``
        must match when it is given; ``bon_n`` alone for data that cannot say."""
        given = self.hparams.bon_n
        if not hasattr(dm, "best_of_n"):
            if given is None:
                raise ConfigError("loss_type bonbon needs the n of its best/worst-of-n pairs: use IMDBDataModule "
                                  "(shape preferences) with pairs from lightning-rlhf-preferences --pairs best_worst, "
                                  "or set model.init_args.bon_n")
            return given
        n = dm.best_of_n()
        if given is not None and given != n:
            raise ConfigError(f"bon_n ({given}) does not match the pairs in '{dm.hparams.data_path}', which are the "
                              f"best and worst of samples_per_prompt {n}; remove bon_n (the pairs set it), or rerun "
                              f"lightning-rlhf-preferences --pairs best_worst --samples-per-prompt {given}")
        return n

    def configure_optimizers(self) -> dict:
        return configure_adamw(self, self.policy)

    @torch.no_grad()
    def on_fit_start(self) -> None:
        if not self.hparams.precompute_ref_logprobs:
            return
        dm = self.trainer.datamodule
        for split in ("train", "validation"):
            if split not in dm.splits:
                continue
            sums = torch.zeros(len(dm.splits[split]), 2, device=self.device)
            for batch in dm.ordered_loader(split):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with self.trainer.precision_plugin.forward_context():  # as in the training step
                    _, ref = self._logprobs(batch, policy_grad=False)
                sums[batch["index"]] = ref.float().view(2, -1).T
            self.ref_cache[split] = sums
        if self.ref_model is not None:
            self.ref_model = None  # every reference log-prob is cached: free the model

    def _logprobs(self, batch: dict[str, torch.Tensor], policy_grad: bool = True
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Summed response log-probs (2b,) under the policy (with grad; None without
        ``policy_grad``) and the reference (from the cache when precomputed; None for a
        reference-free loss); chosen rows first, then rejected. Length-averaged instead of
        summed for ``simpo`` and with ``ipo_length_normalize``."""
        queries = batch["queries"].repeat(2, 1)
        query_mask = batch["query_mask"].repeat(2, 1)
        responses = torch.cat([batch["chosen"], batch["rejected"]])
        response_mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
        ids, mask = torch.cat([queries, responses], -1), torch.cat([query_mask, response_mask], -1)
        m = response_mask.float()
        t, hp = self.hparams.temperature, self.hparams
        average = hp.loss_type == "simpo" or hp.ipo_length_normalize
        policy = sequence_logprobs(response_logprobs(self.policy, ids, mask, responses, t)[0], m, average) \
            if policy_grad else None
        if hp.loss_type in REFERENCE_FREE:
            return policy, None
        cache = self.ref_cache.get("train" if self.training else "validation")
        if cache is not None and policy_grad:
            return policy, cache[batch["index"]].T.reshape(-1)
        if self.ref_model is None and not is_lora(self.policy):
            raise RuntimeError(f"no reference log-probs cached for this {'train' if self.training else 'validation'} "
                               f"batch and the reference model was freed")
        with torch.no_grad():
            ref_model = self.ref_model if self.ref_model is not None else self.policy
            ref, _ = response_logprobs(ref_model, ids, mask, responses, t, disable_adapter=self.ref_model is None)
        return policy, sequence_logprobs(ref, m, average)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hp = self.hparams
        policy, ref = self._logprobs(batch)
        b = batch["chosen"].shape[0]
        ref_chosen, ref_rejected = (None, None) if ref is None else (ref[:b], ref[b:])
        out = dpo_loss(policy[:b], policy[b:], ref_chosen, ref_rejected, hp.beta, hp.loss_type, hp.label_smoothing,
                       self.bon_n, hp.bonbon_alpha, hp.simpo_gamma)
        stats = {
            "rewards/chosen": out.chosen_rewards.mean(),
            "rewards/rejected": out.rejected_rewards.mean(),
            "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float().mean(),
            "rewards/margins": (out.chosen_rewards - out.rejected_rewards).mean(),
            "logps/chosen": policy[:b].detach().mean(),
            "logps/rejected": policy[b:].detach().mean(),
        }
        if hp.loss_type == "bonbon":  # the two unweighted parts: loss = α sft_loss + (1 - α) ipo_loss
            stats |= {"sft_loss": out.sft_loss, "ipo_loss": out.ipo_loss}
        return out.loss, stats

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, stats = self._step(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite DPO loss at step {self.global_step}; lower the learning rate")
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in stats.items()})
        return loss

    def on_validation_epoch_start(self) -> None:
        for metric in self.val_metrics.values():
            metric.to(self.device).reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, stats = self._step(batch)
        n = batch["chosen"].shape[0]
        self.val_metrics["loss"].update(loss, weight=n)
        self.val_metrics["accuracies"].update(stats["rewards/accuracies"], weight=n)
        self.val_metrics["margins"].update(stats["rewards/margins"], weight=n)
        for part in ("sft_loss", "ipo_loss"):
            if part in self.val_metrics:
                self.val_metrics[part].update(stats[part], weight=n)

    def on_validation_epoch_end(self) -> None:
        values = {k: m.compute() for k, m in self.val_metrics.items()}
        self.log_dict({"val/loss": values["loss"], "val/rewards/accuracies": values["accuracies"],
                       "val/rewards/margins": values["margins"]}, prog_bar=True)
        self.log_dict({f"val/{k}": values[k] for k in ("sft_loss", "ipo_loss") if k in values})

    def sample_rows(self, prompts: list[str], max_new_tokens: int, temperature: float, seed: int) -> list[dict]:
        """Rows for the sample table: prompt and continuation."""
        texts = generate_texts(self.policy, self.tokenizer, prompts, max_new_tokens, temperature, seed)
        return [{"prompt": p, "continuation": t} for p, t in zip(prompts, texts, strict=True)]

    def trained_lm(self) -> PreTrainedModel:
        return self.policy
