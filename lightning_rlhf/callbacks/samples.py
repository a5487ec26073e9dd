"""``SampleTableLogger``: a table of generations from fixed prompts, for whichever loggers the Trainer has."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from lightning_rlhf.sharding import gathered

DEFAULT_PROMPTS = [
    "This movie was",
    "I went to see this film",
    "The acting in this",
    "My wife and I",
    "Honestly, the plot",
    "The director of",
    "I have never",
    "After watching the trailer",
]


def markdown_table(rows: list[dict]) -> str:
    """Markdown table with one column per key; ``|`` and newlines are escaped."""
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(value: object) -> str:
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def can_hold_tables(logger: Logger) -> bool:
    """Whether :func:`log_sample_table` writes to this logger."""
    return isinstance(logger, TensorBoardLogger | WandbLogger | MLFlowLogger)


def log_sample_table(loggers: Sequence[Logger], rows: list[dict], step: int, key: str = "samples") -> int:
    """Write ``rows`` (one dict per sample, the same keys in each) to every logger that holds tables:
    TensorBoard a markdown text (tag ``key``), W&B a ``wandb.Table`` (key ``key``), MLflow a table
    artifact ``<key>/step_<step>.json`` (``MlflowClient.log_table``, shown in the run's artifacts).
    Other loggers get nothing. Returns how many loggers got the table."""
    if not rows:
        return 0
    columns = list(rows[0])
    written = 0
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(key, markdown_table(rows), global_step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=columns, data=[[row[c] for c in columns] for row in rows], step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_table(logger.run_id, data={c: [row[c] for row in rows] for c in columns},
                                        artifact_file=f"{key}/step_{step:07d}.json")
        else:
            continue
        written += 1
    return written


class SampleTableLogger(L.Callback):
    """Generate from the same prompts with the same seed and log the table (rank zero only).

    The module provides ``sample_rows(prompts, max_new_tokens, temperature, seed)``; SFT rows hold
    prompt and continuation, PPO rows add the reward. Same prompts and seed at every log make
    the tables comparable across steps. The table goes to every logger of the Trainer that holds
    tables (:func:`log_sample_table`: TensorBoard, W&B, MLflow); with none, nothing is generated.
    View more than 10 tables per tag with ``tensorboard --samples_per_plugin=text=100``.

    Args:
        prompts: Prompts to continue; default a fixed set of IMDB-style openings.
        max_new_tokens: Tokens to generate per prompt.
        temperature: Sampling temperature.
        seed: Seed of the sampling generator.
        every_n_train_steps: Also log every N training batches (0 = only at validation end).
        on_validation: Log at the end of every validation epoch.
    """

    def __init__(
        self,
        prompts: list[str] | None = None,
        max_new_tokens: int = 32,
        temperature: float = 0.7,
        seed: int = 0,
        every_n_train_steps: int = 0,
        on_validation: bool = True,
    ) -> None:
        self.prompts = prompts or list(DEFAULT_PROMPTS)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.every_n_train_steps = every_n_train_steps
        self.on_validation = on_validation

    @staticmethod
    def _step(trainer: L.Trainer) -> int:
        # the logger's x-axis (batches), not optimizer steps: PPO takes many per batch
        return trainer.fit_loop.epoch_loop._batches_that_stepped

    def log_table(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0 generates and logs. Under ``fsdp2`` every rank first takes part in gathering the
        trained model's weights (a collective; rank 0 alone would wait for the others forever);
        frozen ones (the reference) are not sampled from, so they stay sharded."""
        loggers = [lg for lg in trainer.loggers if can_hold_tables(lg)]  # the same on every rank
        if not loggers:
            return
        trained = [m for m in pl_module.children() if any(p.requires_grad for p in m.parameters())]
        with gathered(*trained), trainer.precision_plugin.forward_context():
            if trainer.is_global_zero:
                rows = pl_module.sample_rows(self.prompts, self.max_new_tokens, self.temperature, self.seed)
                log_sample_table(loggers, rows, self._step(trainer))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_validation and not trainer.sanity_checking:
            self.log_table(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.every_n_train_steps
        if n > 0 and self._step(trainer) % n == 0:
            self.log_table(trainer, pl_module)
