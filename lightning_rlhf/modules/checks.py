"""Checks shared by the LightningModules, so bad input fails with a message that names the fix."""

from __future__ import annotations

from typing import Any

import lightning as L

from lightning_rlhf.errors import ConfigError


def require_own_checkpoint(module: L.LightningModule, checkpoint: dict[str, Any], marker: str | None = None) -> None:
    """Refuse a checkpoint written by another module type before Lightning's key mismatch does."""
    saved = checkpoint.get("state_dict", {})
    missing = [k for k in module.state_dict() if k not in saved]
    if missing or (marker is not None and marker not in checkpoint):
        name = type(module).__name__
        raise ConfigError(
            f"this checkpoint was not written by {name} (it lacks {(missing or [marker])[:3]}); resume a "
            f"{name} run with its own last.ckpt, or start from an exported folder instead"
        )


def require_same_tokenizer(module: L.LightningModule, tokenizer: Any) -> None:
    """The data module must tokenize with the model's tokenizer (same vocabulary)."""
    dm = getattr(module.trainer, "datamodule", None)
    theirs = getattr(dm, "tokenizer", None)
    if theirs is not None and len(theirs) != len(tokenizer):
        raise ConfigError(
            f"the data module's tokenizer ({len(theirs)} tokens) is not the model's ({len(tokenizer)} "
            f"tokens); set data.tokenizer to the model's tokenizer"
        )
