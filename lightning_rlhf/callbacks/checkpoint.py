"""``LastAndBestCheckpoint``: Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is always the newest state."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastAndBestCheckpoint(ModelCheckpoint):
    """Keeps the best checkpoints by ``monitor`` and a ``last.ckpt`` of the newest state.

    Lightning 2.6 writes ``last.ckpt`` only at steps where it also saved a top-k checkpoint, and
    at the end of training only when it never saved one: a run whose monitored value stopped
    improving left a ``last.ckpt`` of an older step (a reward-model run of 1,469 steps ended with
    ``last.ckpt`` at step 1,000), so resuming or extending it silently went back in time and the
    newest state was lost. Here every validation end and the end of training also write
    ``last.ckpt`` when no checkpoint was written at that step. Every rank calls it, as Lightning's.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_newest(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_newest(trainer)

    def _save_newest(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
