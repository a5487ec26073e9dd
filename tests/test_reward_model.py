import lightning as L
import pytest
import torch
from conftest import TINY_DISTILBERT
from transformers import pipeline

from lightning_rlhf.data import IMDBDataModule
from lightning_rlhf.modules import RewardModelModule
from lightning_rlhf.rewards import SentimentClassifierReward


def test_reward_model_learns_and_exports(tmp_path, tokenizer_dir, imdb_dir):
    L.seed_everything(0)
    dm = IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="classification",
                        batch_size=16, val_size=40, max_length=64)
    module = RewardModelModule(model_name_or_path=None, model_config=TINY_DISTILBERT,
                               tokenizer_name_or_path=tokenizer_dir, learning_rate=3e-3, warmup_steps=5,
                               export_dir=str(tmp_path / "rm"))
    trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, dm, verbose=False)
    before = trainer.callback_metrics["val/acc"].item()
    trainer.fit(module, dm)
    after = trainer.callback_metrics["val/acc"].item()
    assert after >= 0.9 and after > before + 0.2, (before, after)
    assert trainer.callback_metrics["val/auroc"].item() > 0.9
    test = trainer.test(module, dm, verbose=False)[0]
    assert test["test/acc"] >= 0.85

    clf = pipeline("text-classification", model=str(tmp_path / "rm"))
    preds = clf(["great wonderful loved brilliant superb", "awful boring hated terrible dull"])
    assert [p["label"] for p in preds] == ["POSITIVE", "NEGATIVE"]

    reward = SentimentClassifierReward(str(tmp_path / "rm"))
    scores = reward(["the movie was ", "the movie was "], ["great wonderful best", "awful boring worst"])
    assert scores.shape == (2,) and scores[0] > scores[1]
    probs = SentimentClassifierReward(str(tmp_path / "rm"), output="probability")(
        ["the movie was "], ["great wonderful best"])
    assert 0.5 < probs.item() < 1.0


def test_positive_label_is_found_by_name(tiny_classifier_dir):
    folder = tiny_classifier_dir({0: "POSITIVE", 1: "NEGATIVE"})
    reward = SentimentClassifierReward(folder)
    assert reward.positive_index == 0
    texts = ["the movie ", "a film "], ["was great", "was awful"]
    enc = reward.tokenizer([p + r for p, r in zip(*texts, strict=True)], padding=True, return_tensors="pt")
    logits = reward.model(**enc).logits
    torch.testing.assert_close(reward(*texts), logits[:, 0])
    lowercase = tiny_classifier_dir({0: "neg", 1: "pos"})
    assert SentimentClassifierReward(lowercase, positive_label="pos").positive_index == 1


def test_missing_positive_label_lists_the_labels(tiny_classifier_dir):
    folder = tiny_classifier_dir({0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ValueError, match=r"no label 'POSITIVE'.*\['LABEL_0', 'LABEL_1'\]"):
        SentimentClassifierReward(folder)


def test_reward_classifier_is_frozen_and_stays_in_eval(tiny_classifier_dir):
    reward = SentimentClassifierReward(tiny_classifier_dir({0: "NEGATIVE", 1: "POSITIVE"}))
    reward.train()
    assert not reward.model.training
    assert not any(p.requires_grad for p in reward.parameters())


def test_reward_model_runs_under_bf16_mixed(tmp_path, tokenizer_dir, imdb_dir):
    dm = IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="classification",
                        batch_size=8, val_size=16, max_length=32, max_train_samples=32)
    module = RewardModelModule(model_name_or_path=None, model_config=TINY_DISTILBERT,
                               tokenizer_name_or_path=tokenizer_dir, export_dir=str(tmp_path / "rm"))
    trainer = L.Trainer(max_steps=3, precision="bf16-mixed", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, dm)
    trainer.validate(module, dm, verbose=False)
    assert trainer.global_step == 3 and torch.isfinite(trainer.callback_metrics["val/loss"])
    assert next(module.model.parameters()).dtype == torch.float32, "mixed precision keeps fp32 weights"
