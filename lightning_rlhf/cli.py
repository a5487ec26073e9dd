"""``lightning-rlhf``: LightningCLI over every stage; the YAML's ``model.class_path`` picks it."""

from __future__ import annotations

import signal
import sys

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

import lightning_rlhf.modules  # noqa: F401  (registers SFTModule, ... for --model=Name)
from lightning_rlhf.callbacks import InterruptCheckpoint
from lightning_rlhf.data import IMDBDataModule


class RLHFCLI(LightningCLI):
    """Adds ``checkpoint`` (ModelCheckpoint keeping last + best) and ``interrupt_checkpoint``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt_checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 1})


TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "lightning_logs", "name": "", "default_hp_metric": False},
    },
}


def build_cli(args: ArgsType = None, run: bool = True) -> RLHFCLI:
    """Parse ``args`` (default: ``sys.argv``) and, with ``run``, execute the subcommand."""
    return RLHFCLI(
        model_class=L.LightningModule,
        datamodule_class=IMDBDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=TRAINER_DEFAULTS,
        args=args,
        run=run,
    )


def cli_main(args: ArgsType = None) -> None:
    """Entry point of ``lightning-rlhf``; ``args`` lets tests call it in-process.

    Lightning ends a SIGTERM-ed run with exit status 0; we exit 143 (128 + SIGTERM) so that
    schedulers and scripts see that the run did not finish.
    """
    try:
        build_cli(args)
    except SIGTERMException:
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    cli_main()
