"""Preference pairs: built from scored samples (``make_pairs``) and read back (``load_preferences``).

A preference row holds ``prompt``, ``chosen`` and ``rejected`` texts (the responses without the
prompt), the format of public preference sets; ``lightning-rlhf-preferences`` also writes
``chosen_score`` and ``rejected_score``, and with ``--pairs best_worst`` also ``pairs``
(``"best_worst"``) and ``samples_per_prompt`` (n): chosen is the best and rejected the worst of
n samples, what the ``bonbon`` loss needs (``best_of_n``). Other losses ignore these columns.
A ``margin`` column (TRL's name), if present, is how much more the chosen response is preferred;
a pairwise reward model subtracts it inside its Bradley-Terry loss (``pair_texts`` keeps it,
and the two score columns, which a pairwise reward model with soft labels reads).
"""

from __future__ import annotations

import json
import os
from itertools import combinations
from pathlib import Path
from typing import Literal

import datasets

from lightning_rlhf.errors import ConfigError, MissingInputError, UnreachableError
from lightning_rlhf.hub import hub_reachable, looks_like_local_path

PairMode = Literal["all", "best_worst"]
COLUMNS = ("prompt", "chosen", "rejected")
BEST_OF_N_COLUMNS = ("pairs", "samples_per_prompt")  # written by --pairs best_worst
MARGIN = "margin"
SCORES = ("chosen_score", "rejected_score")  # the labeller's scores, written by lightning-rlhf-preferences
PAIR_FLOAT_COLUMNS = (MARGIN, *SCORES)  # per-pair floats a pairwise batch carries when its source has them


def make_pairs(scores: list[float], mode: PairMode = "all", min_margin: float = 0.0) -> list[tuple[int, int]]:
    """(chosen, rejected) indices among the k scored samples of one prompt.

    ``all``: every pair of samples whose scores differ by more than ``min_margin`` (k (k - 1) / 2
    at most, the DPO paper's protocol); ``best_worst``: the highest against the lowest score.
    Ties never make a pair.
    """
    if mode not in ("all", "best_worst"):
        raise ConfigError(f"pairs must be all or best_worst, not '{mode}'")
    if mode == "best_worst":
        best = max(range(len(scores)), key=scores.__getitem__)
        worst = min(range(len(scores)), key=scores.__getitem__)
        candidates = [(best, worst)]
    else:
        candidates = [(i, j) if scores[i] >= scores[j] else (j, i) for i, j in combinations(range(len(scores)), 2)]
    return [(c, r) for c, r in candidates if scores[c] - scores[r] > min_margin]


def load_preferences(source: str, columns: dict[str, str] | None = None) -> datasets.DatasetDict:
    """A folder of ``train*``/``test*``/``val*`` .jsonl or .parquet files, one file, or a hub dataset
    with prompt/chosen/rejected columns; ``columns`` maps our names to the source's
    (e.g. ``{"prompt": "question"}``). Rows with an empty chosen or rejected response are an error."""
    rename = {v: k for k, v in (columns or {}).items()}
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".parquet"))
        by_split: dict[str, list[str]] = {}
        for f in files:
            split = "validation" if f.name.startswith("val") else "test" if f.name.startswith("test") else "train"
            by_split.setdefault(split, []).append(str(f))
        if not by_split:
            raise MissingInputError(f"no .jsonl or .parquet preference files in '{source}'")
        kind = "json" if files[0].suffix == ".jsonl" else "parquet"
        raw = datasets.load_dataset(kind, data_files=by_split)
    elif path.is_file():
        raw = datasets.load_dataset("json" if path.suffix == ".jsonl" else "parquet", data_files={"train": str(path)})
    elif path.exists():
        raise MissingInputError(f"preference data '{source}' is neither a folder nor a .jsonl/.parquet file")
    else:
        hint = "make it with lightning-rlhf-preferences (the command is in configs/offline/dpo.yaml)"
        if looks_like_local_path(source):
            raise MissingInputError(f"preference data '{source}' does not exist; {hint}")
        if not hub_reachable():
            raise UnreachableError(f"preference data '{source}' is neither a local path (no such folder under "
                                   f"{os.getcwd()}) nor reachable: the Hugging Face hub does not answer; {hint}")
        raw = datasets.load_dataset(source)
    raw = raw.rename_columns({k: v for k, v in rename.items() if k in raw["train"].column_names})
    missing = [c for c in COLUMNS if c not in raw["train"].column_names]
    if missing:
        raise ConfigError(f"preference data '{source}' has no {', '.join(missing)} column; it has "
                          f"{', '.join(raw['train'].column_names)} (map names with preference_columns)")
    for name, split in raw.items():
        empty = [i for i, (c, r) in enumerate(zip(split["chosen"], split["rejected"], strict=True)) if not c or not r]
        if empty:
            raise ConfigError(f"row {empty[0]} of the {name} split of '{source}' has an empty chosen or rejected "
                              f"response ({len(empty)} such rows); drop them")
    return raw


def best_of_n_columns(raw: datasets.DatasetDict) -> dict[str, dict[str, list]]:
    """The distinct values of the ``pairs`` and ``samples_per_prompt`` columns of each split (a
    column the split lacks is left out): what ``best_of_n`` reads, kept small once the
    splits are tokenized."""
    return {name: {c: split.unique(c) for c in BEST_OF_N_COLUMNS if c in split.column_names}
            for name, split in raw.items()}


def best_of_n(columns: dict[str, dict[str, list]], source: str) -> int:
    """n when every row of every split is the best against the worst of n samples for its prompt
    (``pairs`` is ``best_worst`` and ``samples_per_prompt`` one n everywhere), as
    ``lightning-rlhf-preferences --pairs best_worst`` writes them; else a ``ConfigError`` that
    names the fix. ``columns`` is ``best_of_n_columns``' answer."""
    fix = ("rerun lightning-rlhf-preferences with --pairs best_worst --samples-per-prompt N (e.g. 8) and a new "
           "--out folder, and set data.data_path to it")
    modes = {m for split in columns.values() for m in split.get("pairs", [None])}
    counts = {n for split in columns.values() for n in split.get("samples_per_prompt", [None])}
    if modes == {None}:
        raise ConfigError(f"loss_type bonbon needs best-against-worst-of-n pairs, but the pairs in '{source}' do not "
                          f"say they are (no pairs and samples_per_prompt columns: all-pairs shards, shards made "
                          f"before these columns, or other data); {fix} (own best/worst-of-n data: add the columns "
                          f"pairs: best_worst and samples_per_prompt: n)")
    if modes != {"best_worst"}:
        raise ConfigError(f"loss_type bonbon needs best-against-worst-of-n pairs, but the pairs in '{source}' are "
                          f"pairs: {', '.join(sorted(map(str, modes)))}; {fix}")
    if None in counts:
        raise ConfigError(f"the best_worst pairs in '{source}' do not record samples_per_prompt, the n that sets the "
                          f"bonbon margin; {fix}")
    if len(counts) > 1:
        raise ConfigError(f"the pairs in '{source}' mix samples_per_prompt {', '.join(map(str, sorted(counts)))}; "
                          f"the bonbon margin needs one n: {fix}")
    (n,) = counts
    return n


def pairs_temperature(data_path: str | None) -> float | None:
    """The sampling temperature recorded in the ``settings.json`` that
    ``lightning-rlhf-preferences`` writes beside its shards; None for other data."""
    path = Path(data_path) / "settings.json" if data_path else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text()).get("temperature")


def pair_texts(ds: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """Each pair as the two whole texts a classifier scores, ``prompt + chosen`` and ``prompt +
    rejected``, tokenized with the tokenizer's special tokens and truncated at ``max_length``
    (as ``SentimentClassifierReward`` tokenizes ``prompt + response`` when it serves as PPO's
    reward): columns ``chosen_input_ids``, ``rejected_input_ids``, ``index`` (the row), and
    ``margin``, ``chosen_score`` and ``rejected_score`` (floats) when the source has them."""
    def encode(batch: dict, idx: list[int]) -> dict:
        out = {"index": idx}
        for key in ("chosen", "rejected"):
            texts = [p + r for p, r in zip(batch["prompt"], batch[key], strict=True)]
            out[f"{key}_input_ids"] = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        for key in kept:
            out[key] = [float(m) for m in batch[key]]
        return out

    kept = [c for c in PAIR_FLOAT_COLUMNS if c in ds.column_names]
    return ds.map(encode, batched=True, with_indices=True,
                  remove_columns=[c for c in ds.column_names if c not in kept], desc="tokenizing pair texts")
