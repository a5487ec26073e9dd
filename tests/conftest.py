"""Offline fixtures: a tiny tokenizer, tiny review files and tiny models (what they are built from,
and the helpers tests import by name, are in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_DISTILBERT, TINY_GPT2, make_reviews, write_jsonl


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from lightning_rlhf.tokenizer_training import train_bpe_tokenizer

    texts = [r["text"] for r in make_reviews(400, seed=1)]
    tok = train_bpe_tokenizer(iter(texts), vocab_size=300)
    out = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def imdb_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder with train.jsonl and test.jsonl of toy reviews."""
    out = tmp_path_factory.mktemp("imdb")
    write_jsonl(out / "train.jsonl", make_reviews(240, seed=2))
    write_jsonl(out / "test.jsonl", make_reviews(80, seed=3))
    return str(out)


@pytest.fixture
def tiny_gpt2(tokenizer_dir: str) -> dict:
    return {**TINY_GPT2, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}


@pytest.fixture
def tiny_classifier_dir(tmp_path: Path, tokenizer_dir: str):
    """Save a random tiny classifier with the given ``id2label`` and return its folder."""
    from transformers import AutoTokenizer

    from lightning_rlhf.models.loading import build_from_config

    def make(id2label: dict[int, str]) -> str:
        config = {**TINY_DISTILBERT, "num_labels": len(id2label), "id2label": id2label,
                  "label2id": {v: k for k, v in id2label.items()}}
        model = build_from_config(config, "classifier", seed=0)
        out = tmp_path / ("clf_" + "_".join(id2label.values()))
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
        return str(out)

    return make


@pytest.fixture
def tiny_policy_dirs(tmp_path: Path, tokenizer_dir: str, tiny_gpt2: dict) -> dict[str, str]:
    """Two tiny GPT-2 exports with different random weights and the same tokenizer."""
    from transformers import AutoTokenizer

    from lightning_rlhf.models.loading import build_from_config

    folders = {}
    for name, seed in (("before", 0), ("after", 1)):
        out = tmp_path / name
        build_from_config(tiny_gpt2, "causal_lm", seed=seed).save_pretrained(out)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
        folders[name] = str(out)
    return folders


@pytest.fixture(scope="session")
def wordpiece_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny DistilBERT classifier with its own BERT-style WordPiece tokenizer ([CLS] ... [SEP]),
    as ``lvwerra/distilbert-imdb`` has: a vocabulary unlike the policy's byte-level BPE."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from lightning_rlhf.models.loading import build_from_config

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece()
    tk.train_from_iterator((r["text"] for r in make_reviews(300, seed=4)),
                           trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = {**TINY_DISTILBERT, "vocab_size": tk.get_vocab_size(), "pad_token_id": tk.token_to_id("[PAD]"),
              "num_labels": 2, "id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    out = tmp_path_factory.mktemp("wordpiece_classifier")
    build_from_config(config, "classifier", seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(autouse=True)
def _isolated_working_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in an empty folder of its own, so nothing it reads or writes by a relative
    path (``artifacts/``, ``lightning_logs/``, configs) depends on what the checkout holds, or on a
    pipeline writing there at the same time. Tests that need the repository use absolute paths."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
