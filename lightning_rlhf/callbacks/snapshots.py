"""``PolicySnapshots``: export the policy at evenly spaced steps, so one run traces a curve."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from lightning_rlhf.export import export_pretrained


class PolicySnapshots(L.Callback):
    """Write ``<dirpath>/step-<global_step>`` (a ``save_pretrained`` folder) ``num_snapshots`` times
    per run, the last at the final step: the DPO paper evaluates its runs every 100 steps, and a
    reward-vs-KL frontier needs points along each run, not one dot at its end.

    Works with any module that has ``exportable_policy()`` and ``tokenizer`` (PPO and its
    siblings, DPO). A snapshot is due when ``global_step`` reaches or passes ``k * total /
    num_snapshots`` (PPO advances several optimizer steps per batch). Exports are atomic, and a
    resumed run only writes the snapshots it has not passed yet.

    Args:
        dirpath: Folder for the snapshots.
        num_snapshots: Snapshots per run, evenly spaced over ``trainer.estimated_stepping_batches``.
    """

    def __init__(self, dirpath: str, num_snapshots: int = 5) -> None:
        if num_snapshots < 1:
            raise ValueError(f"num_snapshots must be at least 1, got {num_snapshots}")
        self.dirpath = Path(dirpath)
        self.num_snapshots = num_snapshots
        self._due: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = int(trainer.estimated_stepping_batches)
        due = sorted({max(1, round(k * total / self.num_snapshots)) for k in range(1, self.num_snapshots + 1)})
        self._due = [s for s in due if s > trainer.global_step]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if not self._due or trainer.global_step < self._due[0]:
            return
        while self._due and self._due[0] <= trainer.global_step:
            self._due.pop(0)
        if trainer.is_global_zero:
            export_pretrained(pl_module.exportable_policy(), pl_module.tokenizer,
                              self.dirpath / f"step-{trainer.global_step}")
