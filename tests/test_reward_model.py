import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import NEGATIVE, NEUTRAL, POSITIVE, TINY_DISTILBERT, write_jsonl
from training_state import RecordMetric, assert_same_training_state, resume_trainer
from transformers import pipeline

from lightning_rlhf.data import IMDBDataModule
from lightning_rlhf.errors import ConfigError
from lightning_rlhf.modules import RewardModelModule
from lightning_rlhf.rewards import SentimentClassifierReward, build_reward
from lightning_rlhf.rl.bradley_terry import bradley_terry_loss, soft_preference


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


# -- pairwise (Bradley-Terry) reward model -----------------------------------------------------

def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_bradley_terry_loss_by_hand():
    rc, rr = torch.tensor([2.0, 0.0], requires_grad=True), torch.tensor([1.0, 1.0])
    out = bradley_terry_loss(rc, rr)
    # differences 1 and -1: (-log σ(1) - log σ(-1)) / 2; one pair of two won; mean margin 0
    assert out.loss.item() == pytest.approx(-(log_sigmoid(1.0) + log_sigmoid(-1.0)) / 2)
    assert out.accuracy.item() == 0.5 and out.margin.item() == 0.0
    with_margin = bradley_terry_loss(rc, rr, margin=torch.tensor([0.5, 0.0]))
    assert with_margin.loss.item() == pytest.approx(-(log_sigmoid(0.5) + log_sigmoid(-1.0)) / 2)
    assert with_margin.margin.item() == 0.0, "the logged margin is r_c - r_r, not less the required one"
    centred = bradley_terry_loss(rc, rr, center_rewards_coefficient=0.01)
    # + 0.01 * mean((2 + 1)², (0 + 1)²) = 0.01 * 5
    assert centred.loss.item() == pytest.approx(out.loss.item() + 0.05)
    centred.loss.backward()
    # d/dr_c = -σ(-(r_c - r_r)) / 2 + 0.01 * 2 (r_c + r_r) / 2: -σ(-1)/2 + 0.03 and -σ(1)/2 + 0.01
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    torch.testing.assert_close(rc.grad, torch.tensor([-sig(-1.0) / 2 + 0.03, -sig(1.0) / 2 + 0.01]))
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0])).accuracy.item() == 0.0, "a tie is not won"


def test_soft_labels_by_hand():
    # labeller scores 3 vs 1 at τ 2: p = σ(1); 0 vs 0: p = 1/2
    p = soft_preference(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.0]), temperature=2.0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    torch.testing.assert_close(p, torch.tensor([sig(1.0), 0.5]))
    rc, rr = torch.tensor([2.0, 0.0], requires_grad=True), torch.tensor([1.0, 1.0])
    out = bradley_terry_loss(rc, rr, target=p)
    # z = 1 and -1: (-(σ(1) log σ(1) + σ(-1) log σ(-1)) - (log σ(-1) + log σ(1)) / 2) / 2
    first = -(sig(1.0) * log_sigmoid(1.0) + sig(-1.0) * log_sigmoid(-1.0))
    second = -(log_sigmoid(-1.0) + log_sigmoid(1.0)) / 2
    assert out.loss.item() == pytest.approx((first + second) / 2)
    out.loss.backward()
    # d/dz = σ(z) - p, halved by the mean: 0 where the reward gap already equals the labeller's, σ(-1) - 1/2 else
    torch.testing.assert_close(rc.grad, torch.tensor([0.0, (sig(-1.0) - 0.5) / 2]))
    hard = bradley_terry_loss(rc.detach(), rr, target=torch.ones(2))
    assert hard.loss.item() == pytest.approx(bradley_terry_loss(rc.detach(), rr).loss.item()), "p = 1 is the hard loss"
    with pytest.raises(ValueError, match="temperature must be > 0"):
        soft_preference(torch.zeros(1), torch.zeros(1), temperature=0.0)


def _sentence(rng: random.Random, words: list[str]) -> str:
    return " " + " ".join(rng.choice(words if rng.random() < 0.5 else NEUTRAL) for _ in range(rng.randint(4, 8)))


def _preference_rows(n: int, seed: int, margin: bool = False) -> list[dict]:
    """Toy pairs: the chosen response praises, the rejected one pans (random words each time)."""
    rng = random.Random(seed)
    rows = [{"prompt": rng.choice(["the movie", "this film", "it"]), "chosen": _sentence(rng, POSITIVE),
             "rejected": _sentence(rng, NEGATIVE)} for _ in range(n)]
    return [{**r, "margin": float(i % 3)} for i, r in enumerate(rows)] if margin else rows


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("pairs")
    write_jsonl(out / "train.jsonl", _preference_rows(160, seed=0))
    write_jsonl(out / "test.jsonl", _preference_rows(40, seed=1))
    return str(out)


def _pairwise_dm(data: str, tokenizer_dir: str, batch_size: int = 8, **kw) -> IMDBDataModule:
    return IMDBDataModule(data_path=data, tokenizer=tokenizer_dir, shape="pairwise", batch_size=batch_size,
                          val_size=32, max_length=64, **kw)


def _pairwise_rm(tokenizer_dir: str, **kw) -> RewardModelModule:
    return RewardModelModule(model_name_or_path=None, model_config=TINY_DISTILBERT,
                             tokenizer_name_or_path=tokenizer_dir, objective="pairwise",
                             **{"learning_rate": 3e-3, "warmup_steps": 5, **kw})


def test_pairwise_batches_are_whole_texts(pairs_dir, tokenizer_dir):
    dm = _pairwise_dm(pairs_dir, tokenizer_dir, batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.ordered_loader("validation")))
    row = dm.splits["validation"][0]
    assert batch["chosen_input_ids"].shape == batch["rejected_input_ids"].shape  # one width for one forward
    n = int(batch["chosen_attention_mask"][0].sum())
    assert batch["chosen_input_ids"][0, :n].tolist() == row["chosen_input_ids"]
    assert (batch["chosen_attention_mask"][0, n:] == 0).all(), "right padding"
    assert "margin" not in batch and not dm.has_margins()


def test_pairwise_reward_model_learns_exports_and_scores_for_ppo(pairs_dir, tokenizer_dir, tmp_path):
    L.seed_everything(0)
    module = _pairwise_rm(tokenizer_dir, center_rewards_coefficient=0.01, export_dir=str(tmp_path / "rm"))
    dm = _pairwise_dm(pairs_dir, tokenizer_dir)
    trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    before = trainer.validate(module, dm, verbose=False)[0]
    trainer.fit(module, dm)
    after = trainer.callback_metrics
    assert after["val/accuracy"].item() >= 0.9 > before["val/accuracy"] + 0.2, (before, after)
    assert after["val/margin"].item() > 1.0 and after["val/loss"].item() < before["val/loss"]
    test = trainer.test(module, dm, verbose=False)[0]
    assert test["test/accuracy"] >= 0.9 and test["test/margin"] > 1.0

    folder = str(tmp_path / "rm")
    texts = ["the movie was great wonderful best", "the movie was awful boring worst"]
    logits = pipeline("text-classification", model=folder, function_to_apply="none")(texts)
    assert [p["label"] for p in logits] == ["LABEL_0", "LABEL_0"]
    sigmoid = pipeline("text-classification", model=folder)(texts)
    assert sigmoid[0]["score"] == pytest.approx(1 / (1 + math.exp(-logits[0]["score"])), rel=1e-4)

    # PPO's reward_model: <folder>: the one logit is the score, no positive_label looked up
    module_, reward = build_reward(folder, None, positive_label="NOT-A-LABEL")
    scores = reward(["the movie was", "the movie was"], [" great wonderful best", " awful boring worst"])
    assert scores.tolist() == pytest.approx([p["score"] for p in logits], rel=1e-4, abs=1e-4)
    assert scores[0] > scores[1]
    probs = module_.positive_probability(["the movie was"], [" great wonderful best"])
    assert probs.item() == pytest.approx(sigmoid[0]["score"], rel=1e-4)


def test_a_one_label_classifier_scores_with_its_logit(tiny_classifier_dir):
    folder = tiny_classifier_dir({0: "LABEL_0"})
    reward = SentimentClassifierReward(folder)  # positive_label POSITIVE is not among the labels: not needed
    texts = ["the movie ", "a film "], ["was great", "was awful"]
    enc = reward.tokenizer([p + r for p, r in zip(*texts, strict=True)], padding=True, return_tensors="pt")
    logits = reward.model(**enc).logits
    assert logits.shape == (2, 1)
    torch.testing.assert_close(reward(*texts), logits[:, 0])
    probability = SentimentClassifierReward(folder, output="probability")
    torch.testing.assert_close(probability(*texts), torch.sigmoid(logits[:, 0]))


def test_the_margin_column_enters_the_loss(tokenizer_dir, tmp_path):
    data = str(write_jsonl(tmp_path / "margins" / "train.jsonl", _preference_rows(40, seed=3, margin=True)).parent)
    dm = _pairwise_dm(data, tokenizer_dir, batch_size=6)
    dm.setup("fit")
    assert dm.has_margins()
    batch = next(iter(dm.ordered_loader("validation")))
    assert batch["margin"].tolist() == [float(m) for m in dm.splits["validation"]["margin"][:6]]
    module = _pairwise_rm(tokenizer_dir).eval()  # no dropout: the same logits in both forwards
    r_c = module.rewards(batch["chosen_input_ids"], batch["chosen_attention_mask"])
    r_r = module.rewards(batch["rejected_input_ids"], batch["rejected_attention_mask"])
    expected = -torch.nn.functional.logsigmoid(r_c - r_r - batch["margin"]).mean()
    torch.testing.assert_close(module._pairwise(batch).loss, expected)


def test_soft_labels_come_from_the_pairs_scores(tokenizer_dir, tmp_path):
    rows = [{**r, "chosen_score": 1.0 + i % 4, "rejected_score": -1.0} for i, r in enumerate(_preference_rows(40, 3))]
    data = str(write_jsonl(tmp_path / "scored" / "train.jsonl", rows).parent)
    dm = _pairwise_dm(data, tokenizer_dir, batch_size=6)
    dm.setup("fit")
    assert dm.has_scores()
    batch = next(iter(dm.ordered_loader("validation")))
    scores = dm.splits["validation"]["chosen_score"][:6]
    assert batch["chosen_score"].tolist() == scores and batch["rejected_score"].tolist() == [-1.0] * 6
    module = _pairwise_rm(tokenizer_dir, label_temperature=2.0).eval()
    r_c = module.rewards(batch["chosen_input_ids"], batch["chosen_attention_mask"])
    r_r = module.rewards(batch["rejected_input_ids"], batch["rejected_attention_mask"])
    p, z = torch.sigmoid((torch.tensor(scores) + 1.0) / 2.0), r_c - r_r
    expected = -(p * torch.nn.functional.logsigmoid(z) + (1 - p) * torch.nn.functional.logsigmoid(-z)).mean()
    torch.testing.assert_close(module._pairwise(batch).loss, expected)


def test_soft_labels_on_pairs_without_scores_are_refused(pairs_dir, tokenizer_dir, tmp_path):
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ConfigError, match="needs the labeller's chosen_score and rejected_score"):
        trainer.fit(_pairwise_rm(tokenizer_dir, label_temperature=1.0), _pairwise_dm(pairs_dir, tokenizer_dir))
    with pytest.raises(ConfigError, match="needs the labeller's chosen_score and rejected_score"):
        trainer.validate(_pairwise_rm(tokenizer_dir, label_temperature=1.0), _pairwise_dm(pairs_dir, tokenizer_dir))


@pytest.mark.parametrize("objective, shape, message", [
    ("pairwise", "classification", "objective pairwise trains on preference pairs .* data.shape is 'classification'"),
    ("pairwise", "preferences", "set data.shape: pairwise"),
    ("classification", "pairwise", "objective classification trains on labelled reviews"),
])
def test_objective_and_data_shape_must_match(tokenizer_dir, imdb_dir, pairs_dir, tmp_path, objective, shape, message):
    data = imdb_dir if shape == "classification" else pairs_dir
    dm = IMDBDataModule(data_path=data, tokenizer=tokenizer_dir, shape=shape, batch_size=4, val_size=8, max_length=64)
    module = _pairwise_rm(tokenizer_dir) if objective == "pairwise" else RewardModelModule(
        model_name_or_path=None, model_config=TINY_DISTILBERT, tokenizer_name_or_path=tokenizer_dir)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ConfigError, match=message):
        trainer.fit(module, dm)


def test_pairwise_shape_on_labelled_reviews_is_refused(tokenizer_dir, imdb_dir):
    dm = IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="pairwise", val_size=8)
    with pytest.raises(ConfigError, match="has no prompt, chosen, rejected column"):
        dm.setup("fit")


@pytest.mark.parametrize("kw, message", [
    (dict(objective="ranking"), "objective must be classification or pairwise"),
    (dict(center_rewards_coefficient=0.01), "center_rewards_coefficient applies to objective pairwise only"),
    (dict(objective="pairwise", center_rewards_coefficient=-1.0), "center_rewards_coefficient must be >= 0"),
    (dict(label_temperature=1.0), "label_temperature .* applies to objective pairwise only"),
    (dict(objective="pairwise", label_temperature=0.0), "label_temperature must be > 0"),
])
def test_bad_reward_model_settings(tokenizer_dir, kw, message):
    with pytest.raises(ConfigError, match=message):
        RewardModelModule(model_name_or_path=None, model_config=TINY_DISTILBERT, tokenizer_name_or_path=tokenizer_dir,
                          **kw)


def test_pairwise_objective_on_labelled_data_ends_in_one_error_line(tokenizer_dir, imdb_dir, capsys):
    from lightning_rlhf.cli import cli_main

    config = Path(__file__).resolve().parents[1] / "configs" / "offline" / "reward.yaml"
    with pytest.raises(SystemExit) as done:
        cli_main(["fit", "--config", str(config), "--data.data_path", imdb_dir, "--data.tokenizer", tokenizer_dir,
                  "--data.val_size", "8", "--model.init_args.tokenizer_name_or_path", tokenizer_dir,
                  "--model.init_args.objective", "pairwise", "--trainer.logger", "false"])
    assert done.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: objective pairwise trains on preference pairs"), last
    assert "data.shape: pairwise" in last


@pytest.mark.parametrize("finished", [False, True], ids=["mid_run", "end_of_fit"])
def test_pairwise_reward_model_resume_is_exact(pairs_dir, tokenizer_dir, tmp_path, finished):
    n = 6 if finished else 4  # 128 train pairs in batches of 8: 16 steps an epoch
    kw = dict(center_rewards_coefficient=0.01, lr_schedule="constant")  # a decay would span max_steps
    straight_rec = RecordMetric("train/loss")
    L.seed_everything(5)  # dropout on: its draws must resume too
    straight = _pairwise_rm(tokenizer_dir, **kw)
    t_straight = resume_trainer(tmp_path / "a", 2 * n, straight_rec, every=None if finished else n, limit_val_batches=0)
    t_straight.fit(straight, _pairwise_dm(pairs_dir, tokenizer_dir))
    first_rec = RecordMetric("train/loss")
    L.seed_everything(5)
    resume_trainer(tmp_path / "b", n, first_rec, every=None if finished else n, limit_val_batches=0).fit(
        _pairwise_rm(tokenizer_dir, **kw), _pairwise_dm(pairs_dir, tokenizer_dir))
    resumed_rec = RecordMetric("train/loss")
    resumed = _pairwise_rm(tokenizer_dir, **kw)
    torch.manual_seed(123)  # a different global RNG must not matter
    t_resumed = resume_trainer(tmp_path / "b", 2 * n, resumed_rec, limit_val_batches=0)
    t_resumed.fit(resumed, _pairwise_dm(pairs_dir, tokenizer_dir), ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert first_rec.values + resumed_rec.values == straight_rec.values
    assert_same_training_state(straight, resumed, t_straight.optimizers[0], t_resumed.optimizers[0])


def test_pairwise_reward_model_on_two_processes(tmp_path, tokenizer_dir):
    """4 pairs on each of 2 ranks step with the gradient of the 8 pairs on one process (centring
    term included); both ranks end with the same weights and log the one-process validation metrics."""
    rows = _preference_rows(24, seed=5)
    for i, r in enumerate(rows):  # uneven lengths, so padding differs between the ranks
        r["chosen"] += " and" * (i % 3)
    pairs = str(write_jsonl(tmp_path / "pairs" / "train.jsonl", rows).parent)
    script = Path(__file__).with_name("ddp_reward_pairwise_run.py")
    grads, ranks = {}, {}
    for devices in (1, 2):
        out = tmp_path / f"rm{devices}.pt"
        done = subprocess.run([sys.executable, str(script), str(out), tokenizer_dir, pairs, str(devices)],
                              capture_output=True, text=True, timeout=600, cwd=script.parent)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        grads[devices] = torch.load(out)
        ranks[devices] = [json.loads((tmp_path / f"rm{devices}.pt.rank{k}.json").read_text()) for k in range(devices)]
    assert grads[1].norm() > 0
    assert ((grads[1] - grads[2]).norm() / grads[1].norm()).item() <= 1e-5
    (one,), (r0, r1) = ranks[1], ranks[2]
    assert r0["checksum"] == r1["checksum"]
    for key in ("val/accuracy", "val/margin", "val/loss"):
        assert r0[key] == r1[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
    assert (tmp_path / "rm2.pt.export" / "model.safetensors").exists()


def test_a_pairwise_model_tested_on_labelled_reviews_logs_the_auroc_of_its_logit(tokenizer_dir, imdb_dir, tmp_path):
    """``lightning-rlhf test`` with ``data.shape: classification``: the AUROC of the one logit
    against the labels, equal to torchmetrics' on the logits computed here."""
    from torchmetrics.functional.classification import binary_auroc

    dm = IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="classification", batch_size=8,
                        val_size=8, max_length=64, max_eval_samples=40)
    module = _pairwise_rm(tokenizer_dir)
    trainer = L.Trainer(logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
                        enable_model_summary=False)
    logged = trainer.test(module, dm)[0]
    module.eval()
    with torch.no_grad():
        batches = list(dm.test_dataloader())
        logits = torch.cat([module.rewards(b["input_ids"], b["attention_mask"]) for b in batches])
        labels = torch.cat([b["labels"] for b in batches])
    assert 0 < labels.sum() < len(labels) == 40
    assert logged["test/auroc"] == pytest.approx(binary_auroc(logits, labels).item(), abs=1e-6)


def test_val_by_prompt_holds_out_whole_prompts(tokenizer_dir, tmp_path):
    rows = [{"prompt": f"prompt {i % 10}", "chosen": " great fun", "rejected": " awful mess"} for i in range(60)]
    data = str(write_jsonl(tmp_path / "p" / "train.jsonl", rows).parent)
    pairwise = lambda n: IMDBDataModule(data_path=data, tokenizer=tokenizer_dir, shape="pairwise",  # noqa: E731
                                        val_size=n, max_length=64, val_by_prompt=True)
    dm = pairwise(8)
    dm.setup("fit")
    def prompts(split: str) -> list[str]:
        texts = [dm.tokenizer.decode(list(ids)) for ids in dm.splits[split]["chosen_input_ids"]]
        return [re.search(r"prompt \d", t).group(0) for t in texts]

    val, train = prompts("validation"), prompts("train")
    assert len(val) == 12 and len(train) == 48, "two prompts of 6 pairs each reach 8"
    assert not set(val) & set(train)
    with pytest.raises(ConfigError, match="holds out every prompt"):
        pairwise(59).setup("fit")
