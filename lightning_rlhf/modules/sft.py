"""``SFTModule``: causal-LM fine-tuning of the policy on IMDB reviews."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.export import export_at_fit_end
from lightning_rlhf.generation import generate_texts
from lightning_rlhf.models.loading import load_causal_lm, load_tokenizer
from lightning_rlhf.modules.checks import GlobalRNGCheckpoint, require_same_tokenizer
from lightning_rlhf.optim import Schedule, configure_adamw
from lightning_rlhf.rl.logprobs import left_pad_position_ids
from lightning_rlhf.sharding import export_model, shard_lightning_module


class SFTModule(GlobalRNGCheckpoint, L.LightningModule):
    """Supervised fine-tuning with the causal-LM loss; padding never counts in the loss.

    Args:
        model_name_or_path: Hub id or local folder of the causal LM (null with model_config: both is an error).
        model_config: Config fields for a randomly initialised model, e.g.
            ``{"model_type": "gpt2", "n_layer": 4, "n_head": 4, "n_embd": 256}``.
        tokenizer_name_or_path: Hub id or folder of the tokenizer; defaults to model_name_or_path.
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW weight decay on weight matrices.
        warmup_steps: Linear warmup steps.
        lr_schedule: Decay after warmup: cosine, linear (to 0 at the last step) or constant.
        export_dir: Folder for the ``save_pretrained`` export at the end of fit; default
            ``<log_dir>/export``.
        init_seed: Seed for random initialisation from model_config.
    """

    rlhf_stage = "sft"

    def __init__(
        self,
        model_name_or_path: str | None = "gpt2",
        model_config: dict[str, Any] | None = None,
        tokenizer_name_or_path: str | None = None,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        lr_schedule: Schedule = "cosine",
        export_dir: str | None = None,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = load_tokenizer(tokenizer_name_or_path or model_name_or_path)
        self.model = load_causal_lm(model_name_or_path, model_config, seed=init_seed)
        vocab = self.model.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > vocab:
            raise ConfigError(
                f"tokenizer has {len(self.tokenizer)} tokens but the model embeds only {vocab}; "
                f"set model_config.vocab_size >= {len(self.tokenizer)} or use the model's tokenizer"
            )
        self.val_nll = MeanMetric()

    def setup(self, stage: str) -> None:
        require_same_tokenizer(self, self.tokenizer)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch["attention_mask"]
        # a target counts only if it and the token predicting it are real (left or right padding)
        keep = mask.bool().clone()
        keep[:, 1:] &= mask[:, :-1].bool()
        labels = batch["labels"].masked_fill(~keep, -100)
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=mask,
            position_ids=left_pad_position_ids(mask), labels=labels,
        )
        n_targets = (labels[:, 1:] != -100).sum()
        return out.loss, n_targets

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite SFT loss ({loss.item()}) at step {self.global_step}; lower the "
                f"learning rate, or use bf16-mixed instead of 16-mixed"
            )
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", torch.exp(loss.detach()))
        return loss

    def on_validation_epoch_start(self) -> None:
        # fresh state in this loop's grad mode (validate() runs under inference_mode, fit doesn't)
        self.val_nll.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, n = self._loss(batch)
        self.val_nll.update(loss, weight=n)

    def on_validation_epoch_end(self) -> None:
        nll = self.val_nll.compute()
        self.val_nll.reset()
        self.log_dict({"val/loss": nll, "val/ppl": torch.exp(nll)}, prog_bar=True)

    def configure_optimizers(self) -> dict:
        return configure_adamw(self, self.model)

    def sample_rows(
        self, prompts: list[str], max_new_tokens: int, temperature: float, seed: int
    ) -> list[dict]:
        """Rows for the sample table: prompt and continuation."""
        texts = generate_texts(self.model, self.tokenizer, prompts, max_new_tokens, temperature, seed)
        return [{"prompt": p, "continuation": t} for p, t in zip(prompts, texts, strict=True)]

    def configure_model(self) -> None:
        """Under ``--trainer.strategy fsdp2``: FSDP2 per block (``sharding``)."""
        shard_lightning_module(self)

    def on_fit_end(self) -> None:
        export_at_fit_end(self.trainer, self.hparams.export_dir, export_model(self.model), self.tokenizer,
                          "model and tokenizer")
