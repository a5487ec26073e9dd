"""``PolicySnapshots``: export the policy at quadratically spaced steps, so one run traces a curve
from near the reference out to its final policy."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.export import export_pretrained

EARLY_FRACTION = 0.1  # the first snapshot must land within this fraction of a run's steps


def snapshot_count_problem(count: int) -> str | None:
    """Why ``count`` snapshots per run cannot work, or None.

    Why: the frontier needs each run's low-KL end, so the first snapshot must land within the
    first ``EARLY_FRACTION`` of its steps. Under the quadratic spacing of ``snapshot_steps`` it
    lands at ``1 / count^2`` of them: 25% for 2, 11% for 3, 6.25% for 4, 1.6% for 8.
    """
    if count < 2:
        return f"snapshots must be at least 2 (an early policy and the final one), got {count}"
    if 1 / count ** 2 > EARLY_FRACTION:
        return (f"snapshots: {count} puts the first snapshot at 1/{count}^2 = {1 / count ** 2:.0%} of a run's steps "
                f"(quadratic spacing), after the first {EARLY_FRACTION:.0%}; use at least 4 (8 is the default)")
    return None


def snapshot_steps(total: int, count: int) -> list[int]:
    """The optimizer steps at which a run of ``total`` steps is snapshotted: the one place that
    decides them (the callback exports at them; the frontier sweep evaluates what it exported).

    Quadratic spacing, ``step_k = round(total * (k / count)^2)`` for k = 1..count (halves round
    up), each at least one past the previous: dense early, where KL to the reference is small and
    changes fastest, and the last is the final step. 200 steps, 8 snapshots: 3, 13, 28, 50, 78,
    113, 153, 200. A run shorter than ``count`` steps is snapshotted at every step.

    Args:
        total: optimizer steps of the run (``trainer.estimated_stepping_batches``).
        count: snapshots per run (``snapshot_count_problem`` says which are refused).
    """
    if total < count:
        return list(range(1, total + 1))
    steps: list[int] = []
    for k in range(1, count + 1):
        nearest = (2 * total * k * k + count * count) // (2 * count * count)  # round half up, in integers
        steps.append(max(nearest, steps[-1] + 1 if steps else 1))
    return steps


class PolicySnapshots(L.Callback):
    """Write ``<dirpath>/step-<global_step>`` (a ``save_pretrained`` folder) ``num_snapshots`` times
    per run, the last at the final step: the DPO paper evaluates its runs every 100 steps, and a
    reward-vs-KL frontier needs points along each run, low-KL ones included, not one dot at its end.

    Works with any module that has ``exportable_policy()`` and ``tokenizer`` (PPO and its
    siblings, DPO). A snapshot is due when ``global_step`` reaches or passes a step of
    ``snapshot_steps`` (PPO advances several optimizer steps per batch). Exports are atomic, and a
    resumed run only writes the snapshots it has not passed yet.

    Args:
        dirpath: Folder for the snapshots.
        num_snapshots: Snapshots per run, spaced by ``snapshot_steps`` over
            ``trainer.estimated_stepping_batches``; fewer than 4 cannot put one in the first 10%
            of the steps and are refused.
    """

    def __init__(self, dirpath: str, num_snapshots: int = 8) -> None:
        problem = snapshot_count_problem(num_snapshots)
        if problem:
            raise ConfigError(f"PolicySnapshots: {problem}")
        self.dirpath = Path(dirpath)
        self.num_snapshots = num_snapshots
        self._due: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = snapshot_steps(int(trainer.estimated_stepping_batches), self.num_snapshots)
        self._due = [s for s in due if s > trainer.global_step]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if not self._due or trainer.global_step < self._due[0]:
            return
        while self._due and self._due[0] <= trainer.global_step:
            self._due.pop(0)
        if trainer.is_global_zero:
            export_pretrained(pl_module.exportable_policy(), pl_module.tokenizer,
                              self.dirpath / f"step-{trainer.global_step}")
