"""Export trained models as Hugging Face ``save_pretrained`` folders, atomically."""

from __future__ import annotations

import shutil
from pathlib import Path

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
    """
    folder = Path(folder)
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
