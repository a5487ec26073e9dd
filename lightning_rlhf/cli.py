"""``lightning-rlhf``: LightningCLI over every stage; the YAML's ``model.class_path`` picks it."""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

import lightning_rlhf.modules  # noqa: F401  (registers SFTModule, ... for --model=Name)
from lightning_rlhf.callbacks import InterruptCheckpoint, RunProgress
from lightning_rlhf.data import IMDBDataModule
from lightning_rlhf.errors import run_console
from lightning_rlhf.precision import cpu_bf16_flags, resolve_cpu_precision


@dataclass
class TokenizerRecipe:
    """``build_tokenizer``: train the project tokenizer before the stage starts, if ``out`` is missing.

    Attributes:
        out: Folder to save it to (the path the model and data read); None builds nothing.
        vocab_size: Tokens of the byte-level BPE.
        data: Reviews to train on; default the config's ``data.data_path``.
        max_reviews: Train on the first N reviews only.
    """

    out: str | None = None
    vocab_size: int = 8192
    data: str | None = None
    max_reviews: int | None = None


class RLHFCLI(LightningCLI):
    """Adds ``checkpoint`` (ModelCheckpoint keeping last + best), ``interrupt_checkpoint`` and
    ``build_tokenizer``; replaces Lightning's progress bar with ``RunProgress``; keeps a CPU run's
    bf16 only where the CPU has it (``precision``)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt_checkpoint")
        parser.add_class_arguments(TokenizerRecipe, "build_tokenizer")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 1})

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        precision, notice = resolve_cpu_precision(config.trainer.precision, str(config.trainer.accelerator),
                                                  cpu_bf16_flags())
        if notice:
            config.trainer.precision = precision
            print(notice, flush=True)
        recipe = config.build_tokenizer
        if recipe.out and not Path(recipe.out).exists():
            from lightning_rlhf.tokenizer_training import build_tokenizer

            data = recipe.data or config.data.data_path
            print(f"building the project tokenizer: '{recipe.out}' does not exist yet "
                  f"({recipe.vocab_size} tokens from '{data}', once)", flush=True)
            build_tokenizer(data, recipe.out, recipe.vocab_size, recipe.max_reviews)

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        for i, callback in enumerate(trainer.callbacks):
            if type(callback) in (TQDMProgressBar, RichProgressBar):  # Lightning's default bar
                trainer.callbacks[i] = RunProgress()
        return trainer


TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "lightning_logs", "name": "", "default_hp_metric": False},
    },
}


def build_cli(args: ArgsType = None, run: bool = True) -> RLHFCLI:
    """Parse ``args`` (default: ``sys.argv``) and, with ``run``, execute the subcommand.

    Parse errors raise (``exit_on_error=False``) so that ``cli_main`` can print them as one line.
    """
    return RLHFCLI(
        model_class=L.LightningModule,
        datamodule_class=IMDBDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=TRAINER_DEFAULTS,
        parser_kwargs={"exit_on_error": False},
        args=args,
        run=run,
    )


def _fit_main(args: list[str]) -> None:
    try:
        build_cli(None if args == sys.argv[1:] else args)  # None: Lightning reads sys.argv itself
    except SIGTERMException:
        sys.exit(128 + signal.SIGTERM)


def cli_main(args: ArgsType = None) -> None:
    """Entry point of ``lightning-rlhf``; ``args`` lets tests call it in-process.

    Input errors end with one ``error:`` line and exit status 2 (``errors.run_console``).
    Lightning ends a SIGTERM-ed run with exit status 0; we exit 143 (128 + SIGTERM) so that
    schedulers and scripts see that the run did not finish.
    """
    run_console(_fit_main, "lightning-rlhf fit", args)


if __name__ == "__main__":
    cli_main()
