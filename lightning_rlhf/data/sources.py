"""Read labelled IMDB reviews from a hub id, local data files, or an extracted ``aclImdb/`` folder.

Every source ends as a ``DatasetDict`` with ``text`` (str) and ``label`` (int, 0 = neg, 1 = pos)
columns, ``<br />`` tags replaced by spaces, and at least a ``train`` split.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import datasets

from lightning_rlhf.errors import ConfigError, MissingInputError, UnreachableError, first_line
from lightning_rlhf.hub import hub_reachable, looks_like_local_path

FILE_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
SPLIT_PREFIXES = {"train": "train", "test": "test", "validation": "val"}
_BR = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)


def _files_by_split(folder: Path) -> tuple[str, dict[str, list[str]]]:
    """Group data files by split from their names, using one format (parquet > jsonl > csv)."""
    for suffix, builder in FILE_FORMATS.items():
        files = sorted(p for p in folder.iterdir() if p.suffix == suffix)
        if not files:
            continue
        by_split: dict[str, list[str]] = {}
        for path in files:
            for split, prefix in SPLIT_PREFIXES.items():
                if path.name.lower().startswith(prefix):
                    by_split.setdefault(split, []).append(str(path))
                    break
        if by_split:
            return builder, by_split
    raise MissingInputError(
        f"data folder '{folder}' holds no train*/test* .parquet, .jsonl or .csv files and no "
        f"aclImdb layout (train/pos/*.txt). Point data_path at such a folder or file."
    )


def _read_acl_imdb(folder: Path) -> datasets.DatasetDict:
    splits = {}
    for split in ("train", "test"):
        texts, labels = [], []
        for label, name in ((0, "neg"), (1, "pos")):
            for path in sorted((folder / split / name).glob("*.txt")):
                texts.append(path.read_text(encoding="utf-8"))
                labels.append(label)
        if texts:
            splits[split] = datasets.Dataset.from_dict({"text": texts, "label": labels})
    return datasets.DatasetDict(splits)


def _read_raw(source: str) -> datasets.DatasetDict:
    path = Path(os.path.expanduser(source))
    if path.exists():
        if path.is_dir() and (path / "train" / "pos").is_dir():
            return _read_acl_imdb(path)
        if path.is_dir():
            builder, files = _files_by_split(path)
        elif path.suffix in FILE_FORMATS:
            builder, files = FILE_FORMATS[path.suffix], {"train": [str(path)]}
        else:
            raise ConfigError(
                f"data file '{source}' has suffix '{path.suffix}'; use .parquet, .jsonl or .csv"
            )
        return datasets.load_dataset(builder, data_files=files)
    fix = ("Set data_path to a folder of train/test .parquet/.jsonl/.csv files, an extracted aclImdb/ "
           "folder, or a Hugging Face dataset id such as stanfordnlp/imdb")
    if looks_like_local_path(source):
        raise MissingInputError(f"data path '{source}' does not exist. {fix}")
    offline_cache = os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline_cache and not hub_reachable():
        raise UnreachableError(
            f"data '{source}' is neither a local path (no such folder under {os.getcwd()}) nor reachable: "
            f"the Hugging Face hub does not answer from this machine (set HF_DATASETS_OFFLINE=1 to use a "
            f"cached copy). {fix} (e.g. ../shared/data/imdb)")
    try:
        return datasets.load_dataset(source)
    except Exception as err:  # datasets raises many types for a missing or unreachable hub id
        raise UnreachableError(
            f"data '{source}' is neither a local path nor loadable from the Hugging Face hub "
            f"({first_line(err)}). {fix}"
        ) from err


def _clean(batch: dict) -> dict:
    return {"text": [_BR.sub(" ", t) for t in batch["text"]]}


def load_reviews(source: str) -> datasets.DatasetDict:
    """Load, validate and clean the reviews of ``source``.

    Raises:
        FileNotFoundError: the path does not exist or holds no data files.
        ValueError: a split lacks the ``text`` or ``label`` column.
    """
    raw = _read_raw(source)
    raw = datasets.DatasetDict({k: v for k, v in raw.items() if k in SPLIT_PREFIXES})
    if "train" not in raw:
        raise ConfigError(f"data source '{source}' has no train split (splits: {list(raw)})")
    for split, ds in raw.items():
        missing = {"text", "label"} - set(ds.column_names)
        if missing:
            raise ConfigError(
                f"split '{split}' of '{source}' has no {sorted(missing)} column "
                f"(columns: {ds.column_names}). Rename the columns to text/label."
            )
        extra = [c for c in ds.column_names if c not in ("text", "label")]
        raw[split] = ds.remove_columns(extra)
    return raw.map(_clean, batched=True, desc="cleaning <br /> tags")
