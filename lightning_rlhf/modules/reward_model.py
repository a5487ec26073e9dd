"""``RewardModelModule``: a reward model for PPO, trained on labelled reviews or on preference pairs."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.export import export_at_fit_end
from lightning_rlhf.models.loading import (
    build_from_config,
    check_export_folder,
    check_one_source,
    from_source,
    load_sequence_classifier,
    load_tokenizer,
)
from lightning_rlhf.modules.checks import GlobalRNGCheckpoint, require_same_tokenizer
from lightning_rlhf.optim import Schedule, configure_adamw
from lightning_rlhf.rl.bradley_terry import bradley_terry_loss, soft_preference
from lightning_rlhf.sharding import export_model, shard_lightning_module

Objective = Literal["classification", "pairwise"]
OBJECTIVE_SHAPE = {"classification": "classification", "pairwise": "pairwise"}  # objective -> data.shape
PAIR_METRICS = ("loss", "accuracy", "margin")


def load_reward_head(name_or_path: str | None, config: dict[str, Any] | None, seed: int) -> PreTrainedModel:
    """A sequence classifier with one logit (label ``LABEL_0``): a random one from ``config``, or
    a hub id / folder of an encoder, causal LM or classifier whose head is replaced by a fresh
    one-logit head when it has another number of labels."""
    check_one_source(name_or_path, config)
    if config is not None:
        return build_from_config({**config, "num_labels": 1}, "classifier", seed, default_type="distilbert")
    check_export_folder(name_or_path, "model")
    return from_source("model", name_or_path, lambda source, **kw: AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=1, ignore_mismatched_sizes=True, dtype=torch.float32, **kw))  # fp32 as load_causal_lm


class RewardModelModule(GlobalRNGCheckpoint, L.LightningModule):
    """A reward model: a binary IMDB sentiment classifier, or a Bradley-Terry model of preferences.

    ``objective: classification`` trains a two-label classifier (label 1 = POSITIVE) with
    cross-entropy on labelled reviews (``data.shape: classification``); PPO scores with its
    POSITIVE logit. ``objective: pairwise`` trains a one-logit model on preference pairs
    (``data.shape: pairwise``, e.g. a ``lightning-rlhf-preferences`` folder) with the loss
    ``-log σ(r_c - r_r - margin)`` (``rl.bradley_terry``; TRL's ``RewardTrainer``), logging the
    pair accuracy and mean margin ``r_c - r_r``; PPO's ``reward_model: <export>`` scores with
    that logit, with no ``positive_label`` to set; ``lightning-rlhf test`` on labelled reviews
    (``data.shape: classification``) logs how well that logit ranks them (``test/auroc``). Both exports load with
    ``pipeline("text-classification")`` (for one logit it reports the sigmoid; pass
    ``function_to_apply="none"`` for the logit).

    Args:
        model_name_or_path: Hub id or folder of a sequence classifier or encoder
            (null with model_config: giving both is an error).
        model_config: Config fields for a randomly initialised classifier, e.g.
            ``{"model_type": "distilbert", "n_layers": 2, "dim": 128, "hidden_dim": 512}``.
        tokenizer_name_or_path: Hub id or folder of the tokenizer; defaults to model_name_or_path.
        objective: ``classification`` (labelled reviews) or ``pairwise`` (preference pairs).
        center_rewards_coefficient: ``pairwise``: weight c of TRL's centring term
            ``c * mean((r_c + r_r)²)``, which keeps the mean reward near 0 (TRL suggests 0.01);
            None = off. A ``margin`` column of the pairs, if any, always enters the loss.
        label_temperature: ``pairwise``: τ of soft labels, ``p = σ((s_c - s_r) / τ)`` from the
            scores the labeller gave each pair (the ``chosen_score`` and ``rejected_score`` that
            ``lightning-rlhf-preferences`` writes), so a nearly tied pair asks for a small reward gap
            instead of a won comparison (``rl.bradley_terry``); None (default) = hard labels.
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW weight decay on weight matrices.
        warmup_steps: Linear warmup steps.
        lr_schedule: Decay after warmup: cosine, linear or constant.
        export_dir: Folder for the ``save_pretrained`` export; default ``<log_dir>/export``.
        init_seed: Seed for random initialisation from model_config.
    """

    rlhf_stage = "reward"

    def __init__(
        self,
        model_name_or_path: str | None = "distilbert-base-uncased",
        model_config: dict[str, Any] | None = None,
        tokenizer_name_or_path: str | None = None,
        objective: Objective = "classification",
        center_rewards_coefficient: float | None = None,
        label_temperature: float | None = None,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        lr_schedule: Schedule = "linear",
        export_dir: str | None = None,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVE_SHAPE:
            raise ConfigError(f"objective must be classification or pairwise, not '{objective}'")
        if center_rewards_coefficient is not None and objective != "pairwise":
            raise ConfigError("center_rewards_coefficient applies to objective pairwise only; remove it")
        if center_rewards_coefficient is not None and center_rewards_coefficient < 0:
            raise ConfigError(f"center_rewards_coefficient must be >= 0, not {center_rewards_coefficient}")
        if label_temperature is not None and objective != "pairwise":
            raise ConfigError("label_temperature (soft labels) applies to objective pairwise only; remove it")
        if label_temperature is not None and label_temperature <= 0:
            raise ConfigError(f"label_temperature must be > 0, not {label_temperature}")
        self.save_hyperparameters()
        self.pairwise = objective == "pairwise"
        self.tokenizer = load_tokenizer(tokenizer_name_or_path or model_name_or_path)
        self.model = load_reward_head(model_name_or_path, model_config, init_seed) if self.pairwise else \
            load_sequence_classifier(model_name_or_path, model_config, init_seed, num_labels=2)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        if self.pairwise:
            self.val_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in PAIR_METRICS})
            self.test_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in PAIR_METRICS})
            self.label_auroc = BinaryAUROC()  # testing on labelled reviews: how well the logit ranks them
        else:
            metrics = MetricCollection({"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "auroc": BinaryAUROC()})
            self.val_metrics = metrics.clone(prefix="val/")
            self.test_metrics = metrics.clone(prefix="test/")
        self.val_loss = MeanMetric()
        self.scores_labels = False

    def setup(self, stage: str) -> None:
        require_same_tokenizer(self, self.tokenizer)
        dm = getattr(self.trainer, "datamodule", None)
        shape = getattr(getattr(dm, "hparams", None), "shape", None)
        want = OBJECTIVE_SHAPE[self.hparams.objective]
        self.scores_labels = self.pairwise and shape == "classification" and stage == "test"
        if shape is not None and shape != want and not self.scores_labels:
            if self.pairwise:
                what, fix = ("preference pairs (prompt, chosen, rejected)",
                             "set data.shape: pairwise and data.data_path to preference pairs (a "
                             "lightning-rlhf-preferences folder), or model.init_args.objective: classification "
                             "(labelled reviews are for testing it: lightning-rlhf test)")
            else:
                what, fix = ("labelled reviews (text, label)", "set data.shape: classification, or "
                             "model.init_args.objective: pairwise for preference pairs")
            raise ConfigError(f"objective {self.hparams.objective} trains on {what}, but data.shape is "
                              f"'{shape}'; {fix}")
        soft = self.hparams.label_temperature is not None and shape == "pairwise"
        if soft and hasattr(dm, "has_scores") and not dm.has_scores():
            raise ConfigError(f"label_temperature (soft labels) needs the labeller's chosen_score and rejected_score "
                              f"columns, which '{dm.hparams.data_path}' lacks; make the pairs with "
                              f"lightning-rlhf-preferences, or remove label_temperature")

    # -- classification -----------------------------------------------------------------------
    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        return out.loss, out.logits.float()

    def _evaluate(self, batch: dict[str, torch.Tensor], metrics: MetricCollection) -> torch.Tensor:
        loss, logits = self._forward(batch)
        metrics.update(torch.softmax(logits, -1)[:, 1], batch["labels"])
        return loss

    # -- pairwise -----------------------------------------------------------------------------
    def rewards(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(b,) float32 reward logits of right-padded texts (b, t)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()

    def _pairwise(self, batch: dict[str, torch.Tensor]):
        """One forward over the 2b chosen then rejected texts; the Bradley-Terry loss of the b pairs."""
        b = batch["chosen_input_ids"].shape[0]
        r = self.rewards(torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]]),
                         torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]]))
        tau, target = self.hparams.label_temperature, None
        if tau is not None:
            if "chosen_score" not in batch or "rejected_score" not in batch:
                raise ConfigError("label_temperature (soft labels) needs chosen_score and rejected_score in every "
                                  "pairwise batch; make the pairs with lightning-rlhf-preferences")
            target = soft_preference(batch["chosen_score"], batch["rejected_score"], tau)
        return bradley_terry_loss(r[:b], r[b:], batch.get("margin"), self.hparams.center_rewards_coefficient or 0.0,
                                  target)

    def _update_pairs(self, batch: dict[str, torch.Tensor], metrics: torch.nn.ModuleDict) -> None:
        out, n = self._pairwise(batch), batch["chosen_input_ids"].shape[0]
        for key in PAIR_METRICS:
            metrics[key].update(getattr(out, key), weight=n)

    # -- steps --------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.pairwise:
            out = self._pairwise(batch)
            loss, stats = out.loss, {"train/accuracy": out.accuracy, "train/margin": out.margin}
        else:
            loss, logits = self._forward(batch)
            stats = {"train/acc": (logits.argmax(-1) == batch["labels"]).float().mean()}
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite reward-model loss at step {self.global_step}; lower the learning rate"
            )
        self.log_dict({"train/loss": loss, **stats}, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        # fresh states in this loop's grad mode (validate() runs under inference_mode, fit doesn't)
        self._reset(self.val_metrics)
        self.val_loss.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self.pairwise:
            self._update_pairs(batch, self.val_metrics)
        else:
            self.val_loss.update(self._evaluate(batch, self.val_metrics))

    def on_validation_epoch_end(self) -> None:
        if self.pairwise:
            self.log_dict({f"val/{k}": m.compute() for k, m in self.val_metrics.items()}, prog_bar=True)
        else:
            self.log_dict({**self.val_metrics.compute(), "val/loss": self.val_loss.compute()}, prog_bar=True)
        self._reset(self.val_metrics)
        self.val_loss.reset()

    def on_test_epoch_start(self) -> None:
        self._reset(self.test_metrics)
        if self.pairwise:
            self.label_auroc.reset()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self.scores_labels:  # a pairwise model's logit ranking labelled reviews (label 1 = positive)
            self.label_auroc.update(self.rewards(batch["input_ids"], batch["attention_mask"]), batch["labels"])
        elif self.pairwise:
            self._update_pairs(batch, self.test_metrics)
        else:
            self._evaluate(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        if self.scores_labels:
            self.log("test/auroc", self.label_auroc.compute())
        elif self.pairwise:
            self.log_dict({f"test/{k}": m.compute() for k, m in self.test_metrics.items()})
        else:
            self.log_dict(self.test_metrics.compute())
        self._reset(self.test_metrics)

    @staticmethod
    def _reset(metrics: MetricCollection | torch.nn.ModuleDict) -> None:
        for metric in (metrics.values() if isinstance(metrics, torch.nn.ModuleDict) else [metrics]):
            metric.reset()

    def configure_optimizers(self) -> dict:
        return configure_adamw(self, self.model)

    def configure_model(self) -> None:
        """Under ``--trainer.strategy fsdp2``: FSDP2 per block (``sharding``)."""
        shard_lightning_module(self)

    def on_fit_end(self) -> None:
        what = "one-logit reward model and tokenizer" if self.pairwise else "classifier and tokenizer"
        export_at_fit_end(self.trainer, self.hparams.export_dir, export_model(self.model), self.tokenizer, what)
