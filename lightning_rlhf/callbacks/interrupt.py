"""``InterruptCheckpoint``: Ctrl-C, SIGTERM or a fatal error leaves a resumable checkpoint."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from lightning_rlhf.distributed import any_rank_true


class InterruptCheckpoint(L.Callback):
    """Save ``interrupted.ckpt`` when training stops abnormally; the process still exits non-zero.

    * SIGTERM (cluster pre-emption): Lightning raises at the next batch boundary.
    * First Ctrl-C: the current step (a whole PPO iteration) finishes, then training stops at
      the batch boundary, so the checkpoint resumes exactly. A second Ctrl-C aborts at once.
    * Any other exception (e.g. too many non-finite steps): the state as it is.

    Lightning writes checkpoints to a temporary file and moves it into place, so a crash while
    saving never leaves a half-written checkpoint. Resume with ``--ckpt_path .../interrupted.ckpt``.

    Args:
        filename: Name of the checkpoint, written next to ModelCheckpoint's checkpoints.
    """

    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        self.filename = filename
        self.requested = False
        self._previous_handler: Any = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        rank_zero_info("\nCtrl-C: finishing this step, then saving a checkpoint (Ctrl-C again aborts)")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        try:
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread
            self._previous_handler = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if any_rank_true(self.requested, pl_module.device):  # every rank stops at the same batch
            raise KeyboardInterrupt

    def path(self, trainer: L.Trainer) -> Path:
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                return Path(cb.dirpath) / self.filename
        return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / self.filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
                     ) -> None:
        if trainer.state.fn != "fit" or trainer.global_step == 0 and not self.requested:
            return
        path = self.path(trainer)
        trainer.save_checkpoint(path)
        rank_zero_info(f"saved a resumable checkpoint to {path} ({type(exception).__name__}); resume "
                       f"with --ckpt_path {path}")
