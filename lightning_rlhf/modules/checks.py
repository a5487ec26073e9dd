"""Checks shared by the LightningModules, so bad input fails with a message that names the fix."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lightning_rlhf.distributed import gather_objects, this_ranks
from lightning_rlhf.errors import ConfigError


def require_own_checkpoint(module: L.LightningModule, checkpoint: dict[str, Any], marker: str | None = None) -> None:
    """Refuse a checkpoint written by another module type before Lightning's key mismatch does."""
    saved = checkpoint.get("state_dict")
    # None: a sharded (distributed) checkpoint, whose weights the strategy loaded itself (fsdp2)
    missing = [] if saved is None else [k for k in module.state_dict() if k not in saved]
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


class GlobalRNGCheckpoint:
    """Checkpoints the global torch (and CUDA) RNG and restores it when training starts: dropout
    draws from it and Lightning does not save it, so without this a resumed run is not exact.
    Loading refuses a checkpoint another module type wrote."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng"] = gather_objects(state)  # one per rank: their dropout streams differ

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        require_own_checkpoint(self, checkpoint)
        self._pending_rng = this_ranks(checkpoint["rng"]) if "rng" in checkpoint else None

    def on_train_start(self) -> None:
        rng, self._pending_rng = getattr(self, "_pending_rng", None), None
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
