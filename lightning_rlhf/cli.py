"""``lightning-rlhf``: LightningCLI over every stage; the YAML's ``model.class_path`` picks it."""

from __future__ import annotations

import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

import lightning_rlhf.modules  # noqa: F401  (registers SFTModule, ... for --model=Name)
from lightning_rlhf.callbacks import InterruptCheckpoint, LastAndBestCheckpoint, RunProgress
from lightning_rlhf.config_files import expand_config_args
from lightning_rlhf.data import IMDBDataModule
from lightning_rlhf.errors import (
    ConfigError,
    MissingInputError,
    check_output_folder,
    first_line,
    run_console,
    user_message,
)
from lightning_rlhf.precision import cpu_bf16_flags, resolve_cpu_precision
from lightning_rlhf.sharding import FSDP1_NAMES, USE_FSDP2, is_sharded_checkpoint


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


CKPT_SPECIAL = ("best", "last", "hpc", "registry")  # ckpt_path values Lightning resolves itself
_RESUME = ("give the .ckpt file to resume from (the run's checkpoint.dirpath holds last.ckpt, and "
           "interrupted.ckpt after a stop)")


def _is_checkpoint_file(path: Path) -> bool:
    """Whether ``path`` looks like a Lightning checkpoint: a ``torch.save`` zip whose pickle (the small
    part without the tensors) has Lightning's version key, or a legacy-format pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                return bool(pickles) and b"pytorch-lightning_version" in archive.read(pickles[0])
        with open(path, "rb") as f:
            return f.read(1) == b"\x80"  # pickle protocol 2+: torch's legacy format
    except (OSError, zipfile.BadZipFile) as err:
        raise ConfigError(f"--ckpt_path '{path}' cannot be read ({err}); {_RESUME}") from err


def check_ckpt_path(ckpt_path: Any) -> None:
    """``--ckpt_path`` names a checkpoint file (or a value Lightning resolves: last, best, hpc, a URL)."""
    if ckpt_path is None:
        return
    path = str(ckpt_path)
    if path in CKPT_SPECIAL or path.startswith("registry:") or "://" in path:
        return
    file = Path(path).expanduser()
    if not file.exists():
        raise MissingInputError(f"--ckpt_path '{path}' does not exist; {_RESUME}, or leave --ckpt_path out to "
                                f"start afresh")
    if file.is_dir() and is_sharded_checkpoint(file):  # fsdp2's distributed checkpoint: a folder of shards
        return
    if file.is_dir():
        found = sorted(p.name for p in file.glob("*.ckpt"))
        inside = (f"e.g. --ckpt_path {file / ('last.ckpt' if 'last.ckpt' in found else found[0])}" if found else
                  "that folder holds no .ckpt file (to start from an exported model folder, set the model's "
                  "*_name_or_path to it instead)")
        raise ConfigError(f"--ckpt_path '{path}' is a folder, not a checkpoint file; {_RESUME}: {inside}")
    if not _is_checkpoint_file(file):
        raise ConfigError(f"--ckpt_path '{path}' is not a Lightning checkpoint (the .ckpt files a run's "
                          f"ModelCheckpoint writes); {_RESUME}")


def check_strategy(strategy: Any) -> None:
    """``--trainer.strategy``: Lightning's FSDPStrategy (FSDP1) wraps the module, which breaks manual
    optimization and bypasses ``configure_model``; our stages shard with ``fsdp2`` instead."""
    name = strategy.rsplit(".", 1)[-1] if isinstance(strategy, str) else _class_name(strategy)
    if name in FSDP1_NAMES or name == "FSDPStrategy":
        raise ConfigError(f"--trainer.strategy {name} (Lightning's FSDPStrategy, FSDP1) cannot train lightning-rlhf "
                          f"stages; {USE_FSDP2}")


def _init_args(spec: Any) -> dict:
    """The ``init_args`` of a ``class_path`` setting (a jsonargparse Namespace or a dict), as a dict."""
    init = spec.get("init_args") if hasattr(spec, "get") else None
    if hasattr(init, "as_dict"):
        init = init.as_dict()
    return init if isinstance(init, dict) else {}


def _class_name(spec: Any) -> str:
    return str(spec.get("class_path") or "").rsplit(".", 1)[-1] if hasattr(spec, "get") else ""


def check_output_paths(config: Any) -> None:
    """Folders the run writes (root dir, logger, checkpoints, export, tokenizer) must not be files."""
    trainer = config.trainer
    folders = [("--trainer.default_root_dir", trainer.get("default_root_dir"))]
    loggers = trainer.get("logger")
    for spec in loggers if isinstance(loggers, list) else [loggers]:
        init = _init_args(spec)
        folders += [(f"trainer.logger ({_class_name(spec)}) {key}", init.get(key)) for key in ("save_dir", "root_dir")]
    for spec in trainer.get("callbacks") or []:
        folders.append((f"trainer.callbacks ({_class_name(spec)}) dirpath", _init_args(spec).get("dirpath")))
    folders.append(("checkpoint.dirpath", (config.get("checkpoint") or {}).get("dirpath")))
    folders.append(("model.init_args.export_dir", _init_args(config.get("model")).get("export_dir")))
    folders.append(("build_tokenizer.out", (config.get("build_tokenizer") or {}).get("out")))
    for option, path in folders:
        if isinstance(path, str | Path) and str(path) and "://" not in str(path):
            check_output_folder(path, option)


class RLHFCLI(LightningCLI):
    """Adds ``checkpoint`` (``LastAndBestCheckpoint``: the best and the newest state), ``interrupt_checkpoint`` and
    ``build_tokenizer``; replaces Lightning's progress bar with ``RunProgress``; keeps a CPU run's
    bf16 only where the CPU has it (``precision``)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LastAndBestCheckpoint, "checkpoint")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt_checkpoint")
        parser.add_class_arguments(TokenizerRecipe, "build_tokenizer")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 1})

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Every ``--config`` file with ``base:`` becomes its chain of configs first (``config_files``)."""
        given = sys.argv[1:] if args is None else args
        expanded = expand_config_args(given) if isinstance(given, list | tuple) else given
        try:
            with warnings.catch_warnings():  # args beside a command line: the pipeline's stages, an expanded argv
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
                super().parse_arguments(parser, None if args is None and expanded == given else expanded)
        except UnicodeDecodeError as err:  # jsonargparse reads a --config that is not text
            argv = args if isinstance(args, list) else sys.argv[1:]
            named = [b for a, b in zip(argv, argv[1:], strict=False) if a == "--config"]
            named += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
            shown = " or ".join(f"'{n}'" for n in named) or "a config file"
            raise ConfigError(f"--config {shown} is not a text (YAML) file ({err.reason} at byte {err.start}); "
                              f"give a .yaml config such as configs/offline/sft.yaml") from err
        subcommand = self.config.get("subcommand")
        if subcommand:  # before Lightning reads the checkpoint's hyperparameters (_parse_ckpt_path)
            check_ckpt_path(self.config[subcommand].get("ckpt_path"))

    def _parse_ckpt_path(self) -> None:
        """Lightning replaces the config's model by the one whose hyperparameters the checkpoint holds:
        a checkpoint of another stage would silently resume that stage instead."""
        subcommand = self.config.get("subcommand")
        model = self.config[subcommand].get("model") if subcommand else None
        wanted = str(model.get("class_path") or "") if hasattr(model, "get") else ""
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        try:
            super()._parse_ckpt_path()
        except ArgumentError as err:
            raise ConfigError(f"--ckpt_path '{ckpt}': the hyperparameters saved in it do not fit the config's "
                              f"model ({user_message(err) or first_line(err)}); resume with a checkpoint of this "
                              f"run's own stage and version") from err
        model = self.config[subcommand].get("model") if subcommand else None
        found = str(model.get("class_path") or "") if hasattr(model, "get") else ""
        ours, theirs = wanted.rsplit(".", 1)[-1], found.rsplit(".", 1)[-1]
        if ours and theirs and ours != theirs:  # names, not paths: a class has several import paths
            raise ConfigError(f"--ckpt_path '{ckpt}' was written by {theirs}, but the config trains {ours}; "
                              f"resume a {ours} run with its own last.ckpt (in its checkpoint.dirpath), or start "
                              f"from the {theirs} export instead of its checkpoint")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_output_paths(config)
        check_strategy(config.trainer.get("strategy"))
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
    build_cli(None if args == sys.argv[1:] else args)  # None: Lightning reads sys.argv itself


def cli_main(args: ArgsType = None) -> None:
    """Entry point of ``lightning-rlhf``; ``args`` lets tests call it in-process.

    Input errors end with one ``error:`` line and exit status 2 (``errors.run_console``).
    Lightning ends a SIGTERM-ed run with exit status 0; ``run_console`` makes it 143 (128 + SIGTERM)
    so that schedulers and scripts see that the run did not finish.
    """
    run_console(_fit_main, "lightning-rlhf fit", args)


if __name__ == "__main__":
    cli_main()
