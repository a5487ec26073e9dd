"""Export trained models as Hugging Face ``save_pretrained`` folders, and text files, atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def default_export_folder(trainer, export_dir: str | None) -> Path:
    """``export_dir`` if set, else ``export/`` inside the run's log dir (or its root dir)."""
    if export_dir:
        return Path(export_dir)
    return Path(trainer.log_dir or trainer.default_root_dir) / "export"


def export_pretrained(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path
) -> Path:
    """Write model + tokenizer to ``folder`` via a temporary sibling, then swap it in.

    A crash mid-write leaves the previous export intact instead of a folder without weights.
    The tokenizer's ``model_max_length`` is set to the model's positions, so that
    ``transformers.pipeline(..., truncation=True)`` truncates to what the model can read.
    """
    folder = Path(folder)
    context = model_context(model)
    if context is not None:
        tokenizer.model_max_length = context
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` via a temporary sibling and rename: a killed writer never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def model_context(model: PreTrainedModel) -> int | None:
    """The number of positions the model can read (``n_positions``/``max_position_embeddings``)."""
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def export_at_fit_end(trainer, export_dir: str | None, model: PreTrainedModel,
                      tokenizer: PreTrainedTokenizerBase, what: str) -> Path | None:
    """Export on rank 0 at the end of fit; returns the folder there, None on other ranks.

    The folder is resolved on every rank first: ``trainer.log_dir`` is a collective under DDP,
    and calling it on rank 0 alone would hang or crash the run.
    """
    folder = default_export_folder(trainer, export_dir)
    if not trainer.is_global_zero:
        return None
    path = export_pretrained(model, tokenizer, folder)
    rank_zero_info(f"exported {what} to {path}")
    return path


def _config_files() -> list[Path]:
    """The YAML configs a user can run: ``configs/`` under the working directory first (relative
    paths in them mean the working directory), then the repo's."""
    roots = dict.fromkeys([Path("configs").resolve(), Path(__file__).resolve().parents[1] / "configs"])
    return [f for root in roots if root.is_dir() for f in sorted(root.rglob("*.yaml"))]


def made_by(path: str) -> str | None:
    """The command that writes ``path``: the ``lightning-rlhf fit`` of the config whose model
    exports there (or whose ``build_tokenizer`` builds it), if any config does; a config with
    ``base:`` counts with its base's settings under its own, and one that names ``path`` itself
    comes before one that inherits it."""
    import yaml

    from lightning_rlhf.config_files import resolve_config
    from lightning_rlhf.errors import ConfigError, MissingInputError

    def outputs(data: dict) -> list:
        init = (data.get("model") or {}).get("init_args") or {}
        return [init.get("export_dir"), (data.get("build_tokenizer") or {}).get("out")]

    target = os.path.normpath(os.path.expanduser(path))
    inherited = None
    for config in _config_files():
        try:
            data = yaml.safe_load(config.read_text()) or {}
            if not isinstance(data, dict):
                continue
            resolved = resolve_config(config, data)
        except (OSError, yaml.YAMLError, ConfigError, MissingInputError):
            continue
        for own, settings in ((True, data), (False, resolved)):
            if any(isinstance(o, str) and os.path.normpath(o) == target for o in outputs(settings)):
                try:
                    shown = config.relative_to(Path.cwd())
                except ValueError:
                    shown = config
                if own:
                    return f"lightning-rlhf fit --config {shown}"
                inherited = inherited or f"lightning-rlhf fit --config {shown}"
    return inherited
