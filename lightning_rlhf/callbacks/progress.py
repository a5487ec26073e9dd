"""``RunProgress``: Lightning's progress bar with the run's real totals, or plain lines in a log.

Lightning sizes the bar by the loader's batches per epoch and counts ``max_steps`` as batches,
so PPO (several optimizer steps per batch) showed ``200/381`` with minutes "left" at the end.
Here the total is the batches this epoch will really run. When stdout is not a terminal (CI,
``nohup``, ``> log.txt``), the bar is replaced by one flushed line every ``every_percent`` of
the run or every ``every_seconds``: stage, step / total, elapsed, time left, key figures.
"""

from __future__ import annotations

import math
import sys
import time

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

KEY_FIGURES = ("train/loss", "val/loss", "val/acc", "reward/score", "objective/kl")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def stage_name(pl_module: L.LightningModule) -> str:
    """``sft``, ``reward``, ``ppo``: the module's ``rlhf_stage`` attribute, else its class name."""
    return getattr(pl_module, "rlhf_stage", type(pl_module).__name__.removesuffix("Module").lower())


def batches_in_run(trainer: L.Trainer, pl_module: L.LightningModule) -> float:
    """Training batches the whole run will take (``inf`` if unbounded).

    ``max_steps`` counts optimizer steps; a module that takes several per batch (PPO) says so in
    ``optimizer_steps_per_batch``.
    """
    per_batch = getattr(pl_module, "optimizer_steps_per_batch", 1) / max(trainer.accumulate_grad_batches, 1)
    bounds = []
    if trainer.max_steps and trainer.max_steps > 0:
        bounds.append(math.ceil(trainer.max_steps / per_batch))
    if trainer.max_epochs and trainer.max_epochs > 0:
        bounds.append(trainer.num_training_batches * trainer.max_epochs)
    return min(bounds) if bounds else float("inf")


class RunProgress(TQDMProgressBar):
    """The CLI's progress display; see the module docstring.

    Args:
        every_percent: In plain-line mode, print when the run passes each multiple of this.
        every_seconds: In plain-line mode, print at least this often.
        plain: Force plain lines (True) or the bar (False); None decides by ``sys.stdout.isatty()``.
    """

    def __init__(self, every_percent: float = 5.0, every_seconds: float = 60.0, plain: bool | None = None) -> None:
        super().__init__()
        self.every_percent, self.every_seconds = every_percent, every_seconds
        self.plain = (not sys.stdout.isatty()) if plain is None else plain
        self._start = self._last_time = 0.0
        self._last_bucket = -1
        self._first_step = 0

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        progress = trainer.fit_loop.epoch_loop.batch_progress
        left = batches_in_run(trainer, trainer.lightning_module) - progress.total.ready
        return min(trainer.num_training_batches, progress.current.ready + max(left, 0))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.plain:
            self.disable()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._start = self._last_time = time.monotonic()
        self._first_step = trainer.global_step
        if self.plain:
            total = batches_in_run(trainer, pl_module)
            print(f"[{stage_name(pl_module)}] training: {trainer.global_step} optimizer steps done, "
                  f"{'?' if math.isinf(total) else int(total)} batches in the run", flush=True)

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"{stage_name(trainer.lightning_module)} epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.plain:
            self._maybe_print(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.plain:
            print(f"[{stage_name(pl_module)}] done: step {trainer.global_step} in "
                  f"{_clock(time.monotonic() - self._start)}{self._figures(trainer)}", flush=True)

    def _maybe_print(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now, steps = time.monotonic(), trainer.global_step
        total_steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        done_batches = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        if total_steps is None:
            batches = batches_in_run(trainer, pl_module)
            fraction = done_batches / batches if not math.isinf(batches) else 0.0
        else:
            fraction = steps / total_steps
        bucket = int(fraction * 100 // self.every_percent)
        if bucket == self._last_bucket and now - self._last_time < self.every_seconds:
            return
        self._last_bucket, self._last_time = bucket, now
        elapsed = now - self._start
        start_fraction = self._first_step / total_steps if total_steps else 0.0
        done = fraction - start_fraction
        left = f", ~{_clock(elapsed / done * (1 - fraction))} left" if done > 0 else ""
        where = f"step {steps}/{total_steps}" if total_steps else f"batch {done_batches}"
        print(f"[{stage_name(pl_module)}] {where} ({fraction:.0%}), {_clock(elapsed)} elapsed{left}"
              f"{self._figures(trainer)}", flush=True)

    @staticmethod
    def _figures(trainer: L.Trainer) -> str:
        metrics = trainer.callback_metrics
        shown = [f"{k} {float(metrics[k]):.3g}" for k in KEY_FIGURES if k in metrics]
        return (", " + ", ".join(shown)) if shown else ""
