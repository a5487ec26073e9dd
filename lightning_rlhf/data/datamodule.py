"""``IMDBDataModule``: one data module for every stage (SFT, reward models, PPO and its siblings, DPO)."""

from __future__ import annotations

from collections import Counter
from typing import Literal

import datasets
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_rlhf.data.collate import (
    ClassificationCollator,
    LeftPadCollator,
    LMBlockCollator,
    PairwiseCollator,
    PreferenceCollator,
)
from lightning_rlhf.data.preferences import (
    MARGIN,
    PAIR_FLOAT_COLUMNS,
    SCORES,
    best_of_n,
    best_of_n_columns,
    load_preferences,
    pair_texts,
)
from lightning_rlhf.data.resumable import EpochShuffleSampler, ResumableDataLoader
from lightning_rlhf.data.sources import load_reviews
from lightning_rlhf.errors import ConfigError
from lightning_rlhf.models.loading import load_tokenizer

Shape = Literal["lm", "prompts", "classification", "preferences", "pairwise"]
SHAPES = ("lm", "prompts", "classification", "preferences", "pairwise")
PAIR_SHAPES = ("preferences", "pairwise")
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}


class IMDBDataModule(L.LightningDataModule):
    """IMDB reviews served as LM blocks, rollout prompts or labelled texts, or preference pairs.

    Args:
        data_path: Hugging Face dataset id, a folder of train/test .parquet/.jsonl/.csv files
            with ``text``/``label`` columns, one such file, or an extracted ``aclImdb/`` folder.
        tokenizer: Hub id or local folder of the tokenizer (the policy's, or the classifier's).
        shape: ``lm`` (token blocks for SFT), ``prompts`` (left-padded review openings for PPO
            rollouts), ``classification`` (tokenized text + label for the reward model) or
            ``preferences`` (prompt, chosen and rejected responses for DPO; ``data_path`` is then
            a ``lightning-rlhf-preferences`` folder, a .jsonl/.parquet file or a hub dataset with
            prompt/chosen/rejected columns; ``best_of_n()`` says whether they are best-vs-worst
            of n pairs, for the ``bonbon`` loss), or ``pairwise`` (the same preference data as two
            whole texts, prompt + chosen and prompt + rejected, each tokenized as a classifier reads
            it and truncated at ``max_length``, for a Bradley-Terry reward model; a ``margin``
            column, if the source has one, comes along).
        batch_size: Samples per batch (per process under DDP).
        val_size: Validation reviews held out of train (a count, or a fraction if < 1), unless the
            source has its own validation split (``val*`` files), which is then used.
        val_by_prompt: Pair shapes: hold out whole prompts (at least ``val_size`` pairs), so no
            prompt has pairs in both train and validation; needs a ``prompt`` column.
        max_train_samples: Use at most this many training reviews (after shuffling); None = all.
        max_eval_samples: Use at most this many validation and test reviews; None = all.
        block_size: Tokens per block for the ``lm`` shape.
        prompt_min_tokens: Shortest prompt, in tokens, for the ``prompts`` shape.
        prompt_max_tokens: Longest prompt, in tokens; each prompt's length is drawn (seeded)
            from [prompt_min_tokens, prompt_max_tokens].
        min_review_chars: For prompts, skip reviews shorter than this (TRL's IMDB recipe: 200).
        continuation_tokens: For prompts, also keep the next this many tokens of each review as
            ``continuation_ids`` (the human-written text the prompt was cut from, fewer tokens where
            the review ends first); 0 = none. ``lightning-rlhf-preferences --human-candidate`` reads it.
        max_length: Truncation length for the ``classification`` and ``pairwise`` shapes; for
            ``preferences``, the longest prompt + response allowed (longer pairs are an error,
            not silently cut).
        preference_columns: For ``preferences`` and ``pairwise``, our column names (prompt,
            chosen, rejected, margin) mapped to the source's, e.g. ``{"prompt": "question"}``.
        train_split: ``train``, or ``test`` for a gold judge that must never see the reward
            model's training reviews: the (shuffled) test split beyond its first
            ``max_eval_samples`` reviews trains, those first reviews stay the test set, and
            validation is ``val_size`` reviews of the train split.
        pad_with_eos: Pad with EOS when the tokenizer has no pad token (GPT-2).
        seed: Seed for shuffling, the validation split and prompt lengths.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data_path: str = "stanfordnlp/imdb",
        tokenizer: str = "gpt2",
        shape: Shape = "lm",
        batch_size: int = 8,
        val_size: float = 1000,
        val_by_prompt: bool = False,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        block_size: int = 256,
        prompt_min_tokens: int = 2,
        prompt_max_tokens: int = 8,
        min_review_chars: int = 200,
        continuation_tokens: int = 0,
        max_length: int = 512,
        pad_with_eos: bool = True,
        preference_columns: dict[str, str] | None = None,
        train_split: Literal["train", "test"] = "train",
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if shape not in SHAPES:
            raise ConfigError(f"shape must be one of {', '.join(SHAPES)}, not '{shape}'")
        if not 1 <= prompt_min_tokens <= prompt_max_tokens:
            raise ConfigError(
                f"prompt length range [{prompt_min_tokens}, {prompt_max_tokens}] is empty or "
                f"starts below 1; set 1 <= prompt_min_tokens <= prompt_max_tokens"
            )
        if continuation_tokens < 0:
            raise ConfigError(f"continuation_tokens must be 0 or more, not {continuation_tokens}")
        self.save_hyperparameters()
        self.tokenizer = load_tokenizer(tokenizer, pad_with_eos=pad_with_eos)
        self.splits: dict[str, datasets.Dataset] = {}  # shaped (tokenized) splits
        self._unshaped: dict[str, datasets.Dataset] = {}  # split but not yet shaped
        self.pair_columns: dict[str, dict[str, list]] = {}  # split -> distinct pairs/samples_per_prompt values

    # -- preparing splits -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Split once; shape (tokenize, pack) only the splits ``stage`` reads, the rest when first asked
        for: a fit never tokenizes the 25,000 test reviews."""
        hp = self.hparams
        if not self._unshaped and not self.splits:
            raw = (load_preferences(hp.data_path, hp.preference_columns) if hp.shape in PAIR_SHAPES
                   else load_reviews(hp.data_path))
            if hp.shape in PAIR_SHAPES:
                self.pair_columns = best_of_n_columns(raw)  # tokenizing drops these columns
            parts = self._split_train(raw)
            if "test" in raw:
                parts["test"] = raw["test"].shuffle(seed=hp.seed)
            if hp.train_split == "test":
                parts |= self._train_on_test(parts.get("test"))
            self._unshaped = parts
        wanted = STAGE_SPLITS.get(stage or "", tuple(self._unshaped))
        for name in [n for n in self._unshaped if n in wanted]:
            self._shape_split(name)

    def _shape_split(self, name: str) -> None:
        hp = self.hparams
        ds = self._unshaped.pop(name)
        limit = hp.max_train_samples if name == "train" else hp.max_eval_samples
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        ds = self._shape(ds)
        if len(ds) == 0:
            raise ConfigError(
                f"the {name} split of '{hp.data_path}' is empty after filtering for shape "
                f"'{hp.shape}' (min_review_chars={hp.min_review_chars}, "
                f"block_size={hp.block_size}); use more data or relax those settings"
            )
        self.splits[name] = ds

    def _split_train(self, raw: datasets.DatasetDict) -> dict[str, datasets.Dataset]:
        """The source's own validation split if it has one, else ``val_size`` reviews held out of train."""
        hp = self.hparams
        train = raw["train"].shuffle(seed=hp.seed)
        if "validation" in raw:
            return {"validation": raw["validation"].shuffle(seed=hp.seed), "train": train}
        n_val = int(hp.val_size * len(train)) if hp.val_size < 1 else int(hp.val_size)
        if not 0 < n_val < len(train):
            raise ConfigError(
                f"val_size={hp.val_size} leaves no train or no validation reviews out of "
                f"{len(train)}; choose a size between 1 and {len(train) - 1}"
            )
        if hp.val_by_prompt:
            if hp.shape not in PAIR_SHAPES or "prompt" not in train.column_names:
                raise ConfigError(f"val_by_prompt holds out the prompts of preference pairs, but shape "
                                  f"'{hp.shape}' of '{hp.data_path}' has no prompt column; remove val_by_prompt")
            return self._split_by_prompt(train, n_val)
        return {"validation": train.select(range(n_val)), "train": train.select(range(n_val, len(train)))}

    @staticmethod
    def _split_by_prompt(train: datasets.Dataset, n_val: int) -> dict[str, datasets.Dataset]:
        """Pairs held out whole prompts at a time (at least ``n_val`` pairs, the prompts first met in
        the shuffled order), so no prompt has pairs on both sides: held-out accuracy measures
        prompts the model never trained on."""
        prompts = train["prompt"]
        count = Counter(prompts)  # in the order the prompts are first met
        held: set[str] = set()
        taken = 0
        for p in count:
            if taken >= n_val:
                break
            held.add(p)
            taken += count[p]
        if len(held) == len(count):
            raise ConfigError(f"val_size={n_val} holds out every prompt of the pairs; choose a smaller val_size")
        val = [i for i, p in enumerate(prompts) if p in held]
        rest = [i for i, p in enumerate(prompts) if p not in held]
        return {"validation": train.select(val), "train": train.select(rest)}

    def _train_on_test(self, test: datasets.Dataset | None) -> dict[str, datasets.Dataset]:
        hp = self.hparams
        if test is None or hp.max_eval_samples is None or not 0 < hp.max_eval_samples < len(test):
            raise ConfigError(
                f"train_split: test needs a test split and max_eval_samples between 1 and its size - 1 "
                f"(the first max_eval_samples test reviews stay the test set); '{hp.data_path}' has "
                f"{0 if test is None else len(test)} test reviews, max_eval_samples={hp.max_eval_samples}")
        return {"train": test.select(range(hp.max_eval_samples, len(test))),
                "test": test.select(range(hp.max_eval_samples))}

    def _shape(self, ds: datasets.Dataset) -> datasets.Dataset:
        hp, tok = self.hparams, self.tokenizer
        if hp.shape == "preferences":
            return self._pairs(ds)
        if hp.shape == "pairwise":
            return pair_texts(ds, tok, hp.max_length)
        if hp.shape == "classification":
            labels = set(ds.unique("label"))
            if not labels <= {0, 1}:
                raise ConfigError(
                    f"labels must be 0 (neg) or 1 (pos) for the classification shape, found "
                    f"{sorted(labels)}; drop unlabelled rows (label -1) first"
                )
            return ds.map(
                lambda b: tok(b["text"], truncation=True, max_length=hp.max_length),
                batched=True, remove_columns=["text"], desc="tokenizing reviews",
            )
        if hp.shape == "prompts":
            ds = ds.filter(lambda b: [len(t) >= hp.min_review_chars for t in b["text"]],
                           batched=True, desc="dropping short reviews")
            lengths = np.random.default_rng(hp.seed).integers(
                hp.prompt_min_tokens, hp.prompt_max_tokens + 1, size=len(ds))

            def first_tokens(batch: dict, idx: list[int]) -> dict:
                ids = tok(batch["text"], truncation=True,
                          max_length=hp.prompt_max_tokens + hp.continuation_tokens)["input_ids"]
                cuts = [int(lengths[i]) for i in idx]
                out = {"input_ids": [x[:n] for x, n in zip(ids, cuts, strict=True)]}
                if hp.continuation_tokens:
                    out["continuation_ids"] = [x[n: n + hp.continuation_tokens] for x, n in zip(ids, cuts, strict=True)]
                return out

            return ds.map(first_tokens, batched=True, with_indices=True,
                          remove_columns=["text"], desc="tokenizing prompts")
        eos = tok.eos_token_id

        def blocks(batch: dict) -> dict:
            stream: list[int] = []
            for ids in tok(batch["text"])["input_ids"]:
                stream.extend(ids + ([eos] if eos is not None else []))
            n = len(stream) // hp.block_size * hp.block_size
            return {"input_ids": [stream[i: i + hp.block_size] for i in range(0, n, hp.block_size)]}

        return ds.map(blocks, batched=True, remove_columns=ds.column_names, desc="packing LM blocks")

    def _pairs(self, ds: datasets.Dataset) -> datasets.Dataset:
        """Prompt, chosen and rejected tokenized apart (responses without special tokens), so the
        prompt/response boundary is exact; a pair longer than ``max_length`` is an error."""
        hp, tok = self.hparams, self.tokenizer

        def encode(batch: dict, idx: list[int]) -> dict:
            out = {"prompt_ids": tok(batch["prompt"])["input_ids"], "index": idx}
            for key in ("chosen", "rejected"):
                out[f"{key}_ids"] = tok(batch[key], add_special_tokens=False)["input_ids"]
            return out

        ds = ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names, desc="tokenizing pairs")
        longest = max(len(p) + max(len(c), len(r))
                      for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"], strict=True))
        if longest > hp.max_length:
            raise ConfigError(f"a prompt + response of '{hp.data_path}' has {longest} tokens, more than "
                              f"max_length ({hp.max_length}); raise max_length up to the model's context "
                              f"or drop the long pairs")
        return ds

    def best_of_n(self) -> int:
        """The n of the pairs when each is the best against the worst of n samples (written by
        ``lightning-rlhf-preferences --pairs best_worst``); else a ``ConfigError`` naming the fix."""
        if self.hparams.shape not in PAIR_SHAPES or not self.splits:
            raise ConfigError(f"best-of-n pairs come from the preferences shape after setup, not from shape "
                              f"'{self.hparams.shape}'; set data.shape: preferences")
        return best_of_n(self.pair_columns, self.hparams.data_path)

    # -- loaders ---------------------------------------------------------------------------
    def _collate(self):
        pad = self.tokenizer.pad_token_id
        collators = {"lm": LMBlockCollator(), "prompts": LeftPadCollator(pad),
                     "classification": ClassificationCollator(pad), "preferences": PreferenceCollator(pad),
                     "pairwise": PairwiseCollator(pad)}
        return collators[self.hparams.shape]

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split in self._unshaped:
            self._shape_split(split)
        if split not in self.splits:
            raise ConfigError(
                f"the data source '{self.hparams.data_path}' has no {split} split; "
                f"add {split}* files next to the train files"
            )
        dataset = self.splits[split].with_format(columns=self._columns())
        common = dict(batch_size=self.hparams.batch_size, collate_fn=self._collate(),
                      num_workers=self.hparams.num_workers)
        if not train:
            return DataLoader(dataset, shuffle=False, **common)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = EpochShuffleSampler(dataset, world, rank, shuffle=True, seed=self.hparams.seed)
        consumed = (lambda: trainer.fit_loop.epoch_loop.batch_progress.current.ready) if trainer else None
        return ResumableDataLoader(dataset, sampler=sampler, consumed=consumed,
                                   drop_last=self.hparams.shape == "prompts", **common)

    def _columns(self) -> list[str]:
        if self.hparams.shape == "pairwise":
            have = next(iter(self.splits.values())).column_names if self.splits else []
            return ["chosen_input_ids", "rejected_input_ids", "index", *(c for c in PAIR_FLOAT_COLUMNS if c in have)]
        return {"classification": ["input_ids", "label"],
                "preferences": ["prompt_ids", "chosen_ids", "rejected_ids", "index"]}.get(self.hparams.shape,
                                                                                           ["input_ids"])

    def has_margins(self) -> bool:
        """Whether the ``pairwise`` batches carry a ``margin`` (the source has that column)."""
        return self.hparams.shape == "pairwise" and MARGIN in self._columns()

    def has_scores(self) -> bool:
        """Whether the ``pairwise`` batches carry the labeller's ``chosen_score`` and ``rejected_score``."""
        return self.hparams.shape == "pairwise" and all(c in self._columns() for c in SCORES)

    def train_prompts(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Rows of the train split as one left-padded ``prompts`` batch (dynamic sampling's refill)."""
        if self.hparams.shape != "prompts" or "train" not in self.splits:
            raise ConfigError(f"refill prompts come from the train split of the prompts shape, not of shape "
                              f"'{self.hparams.shape}'")
        rows = self.splits["train"].with_format(columns=["input_ids"]).select(indices)
        return self._collate()(list(rows))

    def ordered_loader(self, split: str) -> DataLoader:
        """The split in its stored order, unsharded and unshuffled (to score every row once)."""
        return self._loader(split, train=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
