
import pandas as pd
import pytest
from helpers import SHARED_DATA, make_reviews, write_jsonl

from lightning_rlhf.data import IMDBDataModule, load_reviews


def _dm(path, tokenizer_dir, **kw) -> IMDBDataModule:
    kw.setdefault("val_size", 20)
    dm = IMDBDataModule(data_path=str(path), tokenizer=tokenizer_dir, **kw)
    dm.setup("fit")
    return dm


def test_jsonl_folder_has_train_validation_test_and_clean_text(imdb_dir):
    raw = load_reviews(imdb_dir)
    assert set(raw) == {"train", "test"}
    assert len(raw["train"]) == 240
    assert all("<br" not in t for t in raw["train"]["text"])


def test_parquet_csv_and_single_file_sources(tmp_path):
    rows = make_reviews(30)
    pq = tmp_path / "pq"
    pq.mkdir()
    pd.DataFrame(rows).assign(rating=1).to_parquet(pq / "train.parquet")
    csv = tmp_path / "csv"
    csv.mkdir()
    pd.DataFrame(rows).to_csv(csv / "train.csv", index=False)
    single = write_jsonl(tmp_path / "one.jsonl", rows)
    for source in (pq, csv, single):
        raw = load_reviews(str(source))
        assert raw["train"].column_names == ["text", "label"]
        assert sorted(raw["train"]["label"]) == sorted(r["label"] for r in rows)


def test_acl_imdb_folder(tmp_path):
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            (root / split / label).mkdir(parents=True)
            for i in range(3):
                (root / split / label / f"{i}_7.txt").write_text(f"{label} review {i}<br />more")
    raw = load_reviews(str(root))
    assert len(raw["train"]) == 6 and len(raw["test"]) == 6
    pos = [t for t, y in zip(raw["train"]["text"], raw["train"]["label"], strict=True) if y == 1]
    assert pos and all(t.startswith("pos review") and "<br" not in t for t in pos)


def test_lm_shape_packs_full_blocks(imdb_dir, tokenizer_dir):
    dm = _dm(imdb_dir, tokenizer_dir, shape="lm", block_size=32, batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 32)
    assert batch["labels"].equal(batch["input_ids"])
    assert batch["attention_mask"].all()


def test_prompts_are_left_padded_and_in_length_range(imdb_dir, tokenizer_dir):
    dm = _dm(imdb_dir, tokenizer_dir, shape="prompts", prompt_min_tokens=2, prompt_max_tokens=6,
             min_review_chars=50, batch_size=16)
    lengths = [len(r["input_ids"]) for r in dm.splits["train"]]
    assert min(lengths) >= 2 and max(lengths) <= 6 and len(set(lengths)) > 1
    batch = next(iter(dm.train_dataloader()))
    mask = batch["attention_mask"]
    assert mask[:, -1].all(), "every prompt ends at the last column"
    # left padding: once a row starts, it stays real
    assert (mask.cummax(-1).values == mask).all()
    pad = dm.tokenizer.pad_token_id
    assert (batch["input_ids"][mask == 0] == pad).all()


def test_prompt_lengths_are_seeded(imdb_dir, tokenizer_dir):
    a = _dm(imdb_dir, tokenizer_dir, shape="prompts", min_review_chars=50, seed=1)
    b = _dm(imdb_dir, tokenizer_dir, shape="prompts", min_review_chars=50, seed=1)
    assert a.splits["train"]["input_ids"] == b.splits["train"]["input_ids"]


def test_classification_keeps_labels(imdb_dir, tokenizer_dir):
    dm = _dm(imdb_dir, tokenizer_dir, shape="classification", max_length=16, batch_size=8)
    batch = next(iter(dm.val_dataloader()))
    assert batch["labels"].shape == (8,)
    assert set(batch["labels"].tolist()) <= {0, 1}
    assert batch["input_ids"].shape[1] <= 16
    assert "test" not in dm.splits, "a fit does not tokenize the test reviews"
    assert len(dm.test_dataloader().dataset) == 80 and len(dm.splits["test"]) == 80


def test_a_fit_shapes_train_and_validation_only_and_test_comes_when_asked(imdb_dir, tokenizer_dir):
    fit = _dm(imdb_dir, tokenizer_dir, shape="lm", block_size=32)
    assert set(fit.splits) == {"train", "validation"}
    fit.setup("test")
    both = IMDBDataModule(data_path=str(imdb_dir), tokenizer=tokenizer_dir, shape="lm", block_size=32, val_size=20)
    both.setup()  # no stage: every split
    assert set(both.splits) == {"train", "validation", "test"}
    for name in ("train", "validation", "test"):
        assert fit.splits[name]["input_ids"] == both.splits[name]["input_ids"], name


def test_missing_path_names_the_fix(tokenizer_dir):
    with pytest.raises(FileNotFoundError, match="does not exist.*data_path"):
        _dm("./no/such/imdb", tokenizer_dir)


def test_missing_text_column(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "train.jsonl", [{"review": "x", "label": 1}] * 5)
    with pytest.raises(ValueError, match=r"no \['text'\] column.*Rename"):
        _dm(tmp_path, tokenizer_dir)


def test_empty_split_after_filtering(imdb_dir, tokenizer_dir):
    with pytest.raises(ValueError, match="empty after filtering.*min_review_chars"):
        _dm(imdb_dir, tokenizer_dir, shape="prompts", min_review_chars=10_000)


def test_folder_without_data_files(tmp_path, tokenizer_dir):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="holds no train"):
        _dm(tmp_path, tokenizer_dir)


def test_tokenizer_without_pad_token(tmp_path, tokenizer_dir, imdb_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.pad_token = None
    tok.eos_token = None
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no pad token.*add_special_tokens"):
        IMDBDataModule(data_path=imdb_dir, tokenizer=str(tmp_path))


def test_bad_prompt_range(imdb_dir, tokenizer_dir):
    with pytest.raises(ValueError, match="prompt length range"):
        IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, prompt_min_tokens=5, prompt_max_tokens=3)


@pytest.mark.skipif(not (SHARED_DATA / "imdb").is_dir(), reason="../shared/data is not present")
def test_shared_imdb_sample_with_real_gpt2_tokenizer():
    dm = IMDBDataModule(
        data_path=str(SHARED_DATA / "imdb" / "train_sample_1000.jsonl"),
        tokenizer=str(SHARED_DATA / "gpt2-tokenizer"), shape="prompts", val_size=100,
    )
    dm.setup("fit")
    assert dm.tokenizer.pad_token == dm.tokenizer.eos_token  # GPT-2 pads with EOS
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 8
    mask = batch["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask.diff(dim=-1) >= 0).all(), "prompts are left-padded"
    assert ((batch["input_ids"] == dm.tokenizer.pad_token_id) | (mask == 1)).all()


def test_a_validation_file_is_used_as_the_validation_split(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "train.jsonl", make_reviews(40, seed=4))
    write_jsonl(tmp_path / "val.jsonl", make_reviews(10, seed=5))
    dm = _dm(tmp_path, tokenizer_dir, shape="classification")
    assert len(dm.splits["validation"]) == 10 and len(dm.splits["train"]) == 40
