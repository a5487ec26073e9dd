"""``RewardModelModule``: fine-tune a sentiment classifier that PPO can use as its reward."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score

from lightning_rlhf.export import export_at_fit_end
from lightning_rlhf.models.loading import load_sequence_classifier, load_tokenizer
from lightning_rlhf.modules.checks import require_own_checkpoint, require_same_tokenizer
from lightning_rlhf.optim import Schedule, configure_adamw


class RewardModelModule(L.LightningModule):
    """Binary IMDB sentiment classifier (label 1 = POSITIVE) trained with cross-entropy.

    Args:
        model_name_or_path: Hub id or folder of a sequence classifier or encoder
            (ignored if model_config).
        model_config: Config fields for a randomly initialised classifier, e.g.
            ``{"model_type": "distilbert", "n_layers": 2, "dim": 128, "hidden_dim": 512}``.
        tokenizer_name_or_path: Hub id or folder of the tokenizer; defaults to model_name_or_path.
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
        learning_rate: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        lr_schedule: Schedule = "linear",
        export_dir: str | None = None,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = load_tokenizer(tokenizer_name_or_path or model_name_or_path)
        self.model = load_sequence_classifier(model_name_or_path, model_config, init_seed, num_labels=2)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        metrics = MetricCollection({"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "auroc": BinaryAUROC()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_loss = MeanMetric()

    def setup(self, stage: str) -> None:
        require_same_tokenizer(self, self.tokenizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        require_own_checkpoint(self, checkpoint)

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        return out.loss, out.logits.float()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logits = self._forward(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite reward-model loss at step {self.global_step}; lower the learning rate"
            )
        acc = (logits.argmax(-1) == batch["labels"]).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True)
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], metrics: MetricCollection) -> torch.Tensor:
        loss, logits = self._forward(batch)
        metrics.update(torch.softmax(logits, -1)[:, 1], batch["labels"])
        return loss

    def on_validation_epoch_start(self) -> None:
        # fresh states in this loop's grad mode (validate() runs under inference_mode, fit doesn't)
        self.val_metrics.reset()
        self.val_loss.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.val_loss.update(self._evaluate(batch, self.val_metrics))

    def on_validation_epoch_end(self) -> None:
        self.log_dict({**self.val_metrics.compute(), "val/loss": self.val_loss.compute()}, prog_bar=True)
        self.val_metrics.reset()
        self.val_loss.reset()

    def on_test_epoch_start(self) -> None:
        self.test_metrics.reset()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def configure_optimizers(self) -> dict:
        return configure_adamw(self, self.model)

    def on_fit_end(self) -> None:
        export_at_fit_end(self.trainer, self.hparams.export_dir, self.model, self.tokenizer,
                          "classifier and tokenizer")
