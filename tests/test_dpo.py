"""Preference pairs (built, written by shards, resumed, read back) and DPOModule end to end."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import make_dpo, make_preference_dm, preference_pairs, write_jsonl
from training_state import RecordMetric, assert_same_training_state, resume_trainer

from lightning_rlhf.data import IMDBDataModule
from lightning_rlhf.data.preferences import best_of_n, make_pairs
from lightning_rlhf.errors import ConfigError
from lightning_rlhf.preference_pairs import _check_kept_shards
from lightning_rlhf.preference_pairs import main as preferences_main
from lightning_rlhf.rl.logprobs import logprobs_from_logits


def test_make_pairs():
    scores = [0.5, 2.0, 0.5, -1.0]
    assert make_pairs(scores) == [(1, 0), (0, 3), (1, 2), (1, 3), (2, 3)]  # the tie (0, 2) makes no pair
    assert make_pairs(scores, "best_worst") == [(1, 3)]
    # margins: 1.5, 1.5, 1.5, 3.0, 1.5 for (1,0) (0,3) (1,2) (1,3) (2,3); only those above 1.5 stay
    assert make_pairs(scores, min_margin=1.5) == [(1, 3)]


def _preference_args(tiny_gpt2: dict, tokenizer_dir: str, imdb_dir: str, tmp_path: Path, **flags: str) -> list[str]:
    """A tiny random policy exported with its tokenizer, and the ``lightning-rlhf-preferences``
    arguments the tests share (``e_fraction`` labels, 6 new tokens at temperature 1.5, CPU), plus
    ``flags`` (``num_prompts="12"`` -> ``--num-prompts 12``)."""
    from transformers import AutoTokenizer

    from lightning_rlhf.models.loading import build_from_config

    policy = tmp_path / "policy"
    build_from_config(tiny_gpt2, "causal_lm", seed=0).save_pretrained(policy)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(policy)
    extra = [a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", v)]
    return ["--policy", str(policy), "--reward-fn", "helpers:e_fraction", "--data", imdb_dir, "--max-new-tokens", "6",
            "--temperature", "1.5", "--device", "cpu", *extra]


def test_preference_pairs_are_ordered_counted_and_resumable(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, capsys):
    args = _preference_args(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, num_prompts="12", samples_per_prompt="4",
                            shard_size="5", batch_size="4")
    preferences_main([*args, "--out", str(tmp_path / "a")])
    shards = sorted((tmp_path / "a").glob("train-*.jsonl"))
    assert [s.name for s in shards] == ["train-00000.jsonl", "train-00001.jsonl", "train-00002.jsonl"]
    rows = [json.loads(line) for s in shards for line in s.open()]
    assert 0 < len(rows) <= 12 * 6
    assert all(r["chosen_score"] > r["rejected_score"] for r in rows)
    assert all(r["chosen"] and r["rejected"] and r["prompt"] for r in rows)
    assert "done: " + str(len(rows)) + " pairs" in capsys.readouterr().out

    # a run killed after its first shard, then rerun: the same pairs as the uninterrupted run
    preferences_main([*args, "--out", str(tmp_path / "b"), "--num-prompts", "12"])
    for late in sorted((tmp_path / "b").glob("train-*.jsonl"))[1:]:
        late.unlink()
    preferences_main([*args, "--out", str(tmp_path / "b")])
    assert "kept from an earlier run" in capsys.readouterr().out
    assert [s.read_text() for s in sorted((tmp_path / "b").glob("train-*.jsonl"))] == [s.read_text() for s in shards]
    with pytest.raises(SystemExit) as done:
        preferences_main([*args, "--out", str(tmp_path / "b"), "--min-margin", "0.1"])
    assert done.value.code == 2
    assert "holds pairs made with other settings (min_margin)" in capsys.readouterr().err


def test_masks_and_padding_do_not_change_the_log_probs(tiny_gpt2, tokenizer_dir, tmp_path):
    dm = make_preference_dm(preference_pairs(tmp_path), tokenizer_dir)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["queries"].shape[0] == batch["chosen"].shape[0] == batch["rejected"].shape[0] == 4
    assert (batch["query_mask"][:, -1] == 1).all(), "prompts are left-padded"
    module = make_dpo(tiny_gpt2, tokenizer_dir)
    policy, _ = module._logprobs(batch)
    for i in range(4):  # each pair alone, unpadded, gives the same summed log-probs
        q = batch["queries"][i][batch["query_mask"][i].bool()]
        for j, key in enumerate(("chosen", "rejected")):
            r = batch[key][i][batch[f"{key}_mask"][i].bool()]
            ids = torch.cat([q, r]).unsqueeze(0)
            logits = module.policy(ids).logits[:, len(q) - 1: -1]
            expected = logprobs_from_logits(logits, r.unsqueeze(0), 1.0).sum()
            torch.testing.assert_close(policy[j * 4 + i], expected, atol=1e-4, rtol=0)


def test_dpo_learns_a_separable_preference_set_and_exports(tiny_gpt2, tokenizer_dir, tmp_path):
    from transformers import pipeline

    module = make_dpo(tiny_gpt2, tokenizer_dir, beta=0.5, export_dir=str(tmp_path / "export"))
    acc = RecordMetric("train/rewards/accuracies")
    trainer = L.Trainer(max_steps=12, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[acc],
                        num_sanity_val_steps=0)
    trainer.fit(module, make_preference_dm(preference_pairs(tmp_path), tokenizer_dir))
    metrics = trainer.callback_metrics
    assert acc.values[0] <= 0.5 and acc.values[-1] == 1.0
    assert metrics["val/rewards/accuracies"].item() == 1.0 and metrics["val/rewards/margins"].item() > 0
    assert {"train/rewards/chosen", "train/rewards/rejected", "train/logps/chosen", "train/logps/rejected"} \
        <= set(metrics)
    assert not any(k.startswith("ref_model.") for k in module.state_dict())
    rows = module.sample_rows(["the movie", "this film"], 3, 0.7, seed=0)  # the sample table's rows
    assert [r["prompt"] for r in rows] == ["the movie", "this film"] and all("continuation" in r for r in rows)
    out = pipeline("text-generation", model=str(tmp_path / "export"))("the movie", max_new_tokens=3)
    assert out[0]["generated_text"].startswith("the movie")


def test_precomputed_reference_log_probs_give_the_same_training(tiny_gpt2, tokenizer_dir, tmp_path):
    losses = {}
    for precompute in (False, True):
        module = make_dpo(tiny_gpt2, tokenizer_dir, precompute_ref_logprobs=precompute)
        rec = RecordMetric("train/loss")
        L.Trainer(max_steps=5, logger=False, enable_checkpointing=False, default_root_dir=tmp_path, callbacks=[rec],
                  enable_progress_bar=False, enable_model_summary=False, val_check_interval=5,
                  limit_val_batches=1).fit(module, make_preference_dm(preference_pairs(tmp_path), tokenizer_dir))
        losses[precompute] = rec.values
        assert (module.ref_model is None) == precompute, "the reference is freed once its log-probs are cached"
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


@pytest.mark.parametrize("finished, loss_type", [(False, "sigmoid"), (True, "sigmoid"), (False, "bonbon")],
                         ids=["mid_run", "end_of_fit", "bonbon_mid_run"])
def test_dpo_resume_is_exact(tiny_gpt2, tokenizer_dir, tmp_path, finished, loss_type):
    data = preference_pairs(tmp_path, n=40, best_of=4 if loss_type == "bonbon" else None)  # 32 train pairs: 8 batches
    n = 6 if finished else 4
    straight_rec = RecordMetric("train/loss")
    straight = make_dpo(tiny_gpt2, tokenizer_dir, loss_type=loss_type)
    t_straight = resume_trainer(tmp_path / "a", 2 * n, straight_rec, every=None if finished else n, limit_val_batches=0)
    t_straight.fit(straight, make_preference_dm(data, tokenizer_dir))
    first_rec = RecordMetric("train/loss")
    resume_trainer(tmp_path / "b", n, first_rec, every=None if finished else n, limit_val_batches=0).fit(
        make_dpo(tiny_gpt2, tokenizer_dir, loss_type=loss_type), make_preference_dm(data, tokenizer_dir))
    resumed_rec = RecordMetric("train/loss")
    resumed = make_dpo(tiny_gpt2, tokenizer_dir, loss_type=loss_type)
    t_resumed = resume_trainer(tmp_path / "b", 2 * n, resumed_rec, limit_val_batches=0)
    t_resumed.fit(resumed, make_preference_dm(data, tokenizer_dir), ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert first_rec.values + resumed_rec.values == straight_rec.values
    assert_same_training_state(straight, resumed, t_straight.optimizers[0], t_resumed.optimizers[0])


@pytest.mark.parametrize("rows, kw, message", [
    ([{"prompt": "a", "chosen": "b"}], {}, "has no rejected column"),
    ([{"prompt": "a", "chosen": "", "rejected": "c"}], {}, "row 0 of the train split .* has an empty chosen"),
    ([{"prompt": "the movie " * 40, "chosen": "b", "rejected": "c"}], {}, r"has \d+ tokens, more than max_length"),
    ([{"question": "a", "chosen": "b", "rejected": "c"}] * 20, {"preference_columns": {"prompt": "question"}}, None),
])
def test_preference_files_are_checked(tokenizer_dir, tmp_path, rows, kw, message):
    data = str(write_jsonl(tmp_path / "bad" / "train.jsonl", rows * 20))
    dm = make_preference_dm(data, tokenizer_dir, **kw)
    if message is None:
        dm.setup("fit")
        assert len(dm.splits["train"]) == 400 - 8
        return
    with pytest.raises(ConfigError, match=message):
        dm.setup("fit")


def test_dpo_runs_under_bf16_mixed(tiny_gpt2, tokenizer_dir, tmp_path):
    module = make_dpo(tiny_gpt2, tokenizer_dir, export_dir=str(tmp_path / "export"))
    trainer = L.Trainer(max_steps=3, precision="bf16-mixed", logger=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, make_preference_dm(preference_pairs(tmp_path, n=24), tokenizer_dir))
    trainer.validate(module, trainer.datamodule, verbose=False)
    assert trainer.global_step == 3 and torch.isfinite(trainer.callback_metrics["val/loss"])
    batch = next(iter(trainer.datamodule.train_dataloader()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        policy, _ = module._logprobs(batch)
    assert policy.dtype == torch.float32, "summed log-probs from the fp32 head"


def test_best_worst_pairs_record_that_they_are_best_and_worst_of_n(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    args = _preference_args(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, num_prompts="12", batch_size="12")
    preferences_main([*args, "--pairs", "best_worst", "--samples-per-prompt", "5", "--out", str(tmp_path / "bw")])
    rows = [json.loads(line) for line in (tmp_path / "bw" / "train-00000.jsonl").open()]
    assert 0 < len(rows) <= 12, "one pair per prompt at most (ties make none)"
    assert all(r["pairs"] == "best_worst" and r["samples_per_prompt"] == 5 for r in rows)
    assert all(r["chosen_score"] > r["rejected_score"] for r in rows)
    dm = IMDBDataModule(data_path=str(tmp_path / "bw"), tokenizer=tokenizer_dir, shape="preferences", val_size=1)
    dm.setup("fit")
    assert dm.best_of_n() == 5
    # the default all-pairs shards keep their old columns, and say they are no best-of-n pairs
    preferences_main([*args, "--samples-per-prompt", "3", "--out", str(tmp_path / "all")])
    assert "samples_per_prompt" not in json.loads((tmp_path / "all" / "train-00000.jsonl").open().readline())
    dm = IMDBDataModule(data_path=str(tmp_path / "all"), tokenizer=tokenizer_dir, shape="preferences", val_size=1)
    dm.setup("fit")
    with pytest.raises(ConfigError, match="rerun lightning-rlhf-preferences with --pairs best_worst"):
        dm.best_of_n()


def test_human_candidate_pairs_the_reviews_own_continuation(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, capsys):
    from lightning_rlhf.data.sources import load_reviews

    args = [*_preference_args(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, num_prompts="10", samples_per_prompt="2",
                              batch_size="4"), "--human-candidate"]
    preferences_main([*args, "--out", str(tmp_path / "h")])
    rows = [json.loads(line) for line in (tmp_path / "h" / "train-00000.jsonl").open()]
    reviews = load_reviews(imdb_dir)["train"]["text"]
    by_prompt: dict[str, set[str]] = {}
    for r in rows:
        assert r["chosen_score"] > r["rejected_score"]
        by_prompt.setdefault(r["prompt"], set()).update((r["chosen"], r["rejected"]))
    assert len(by_prompt) >= 8 and all(len(texts) <= 3 for texts in by_prompt.values()), "2 samples + 1 human"
    human = [sum(any(t.startswith(p + c) for t in reviews) for c in texts) for p, texts in by_prompt.items()]
    assert all(h >= 1 for h in human), "every prompt's candidates include the review's own next tokens"
    assert json.loads((tmp_path / "h" / "settings.json").read_text())["human_candidate"] is True

    dm = IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="prompts", continuation_tokens=6,
                        val_size=10)
    dm.setup("fit")
    tok = dm.tokenizer
    row = dm.splits["train"][0]
    assert len(row["continuation_ids"]) == 6
    assert any(tok(t)["input_ids"][: len(row["input_ids"]) + 6] == row["input_ids"] + row["continuation_ids"]
               for t in reviews)
    with pytest.raises(SystemExit) as done:
        preferences_main([*args, "--pairs", "best_worst", "--out", str(tmp_path / "bw")])
    assert done.value.code == 2 and "--human-candidate with --pairs best_worst" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="continuation_tokens must be 0 or more"):
        IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="prompts", continuation_tokens=-1)


def test_best_worst_shards_without_n_are_not_resumed(tmp_path):
    write_jsonl(tmp_path / "train-00000.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    _check_kept_shards(tmp_path, "all")  # all-pairs shards never carry the columns
    with pytest.raises(ConfigError, match="made before they recorded samples_per_prompt"):
        _check_kept_shards(tmp_path, "best_worst")


@pytest.mark.parametrize("columns, message", [
    ({"train": {}, "validation": {}}, "no pairs and samples_per_prompt columns: all-pairs shards"),
    ({"train": {"pairs": ["all"], "samples_per_prompt": [4]}}, "are pairs: all; rerun .* --pairs best_worst"),
    ({"train": {"pairs": ["best_worst"]}}, "do not record samples_per_prompt"),
    ({"train": {"pairs": ["best_worst"], "samples_per_prompt": [8]},
      "validation": {"pairs": ["best_worst"], "samples_per_prompt": [4]}}, "mix samples_per_prompt 4, 8"),
    ({"train": {"pairs": ["best_worst"], "samples_per_prompt": [8]},
      "validation": {"pairs": ["best_worst"], "samples_per_prompt": [8]}}, None),
])
def test_best_of_n_reads_the_pair_columns(columns, message):
    if message is None:
        assert best_of_n(columns, "p") == 8
        return
    with pytest.raises(ConfigError, match=message):
        best_of_n(columns, "p")


def _fit(module, dm, tmp_path, steps=1, **kw):
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)
    trainer.fit(module, dm)
    return trainer


@pytest.mark.parametrize("best_of, bon_n, message", [
    (None, None, "rerun lightning-rlhf-preferences with --pairs best_worst"),
    (8, 4, r"bon_n \(4\) does not match .* samples_per_prompt 8; remove bon_n"),
])
def test_bonbon_refuses_pairs_that_are_not_its_best_of_n(tiny_gpt2, tokenizer_dir, tmp_path, best_of, bon_n, message):
    module = make_dpo(tiny_gpt2, tokenizer_dir, loss_type="bonbon", bon_n=bon_n)
    with pytest.raises(ConfigError, match=message):
        _fit(module, make_preference_dm(preference_pairs(tmp_path, best_of=best_of), tokenizer_dir), tmp_path)


def test_bonbon_on_all_pairs_ends_in_one_error_line(tiny_gpt2, tokenizer_dir, tmp_path, capsys):
    from lightning_rlhf.cli import cli_main

    config = Path(__file__).resolve().parents[1] / "configs" / "offline" / "bonbon.yaml"
    with pytest.raises(SystemExit) as done:
        cli_main(["fit", "--config", str(config), "--data.data_path", preference_pairs(tmp_path),
                  "--data.val_size", "8", "--data.tokenizer", tokenizer_dir, "--model.init_args.policy_name_or_path",
                  "null", "--model.init_args.tokenizer_name_or_path", tokenizer_dir,
                  "--model.init_args.policy_config", json.dumps(tiny_gpt2), "--trainer.logger", "false"])
    assert done.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: loss_type bonbon needs best-against-worst-of-n pairs")
    assert "--pairs best_worst" in last


def test_bonbon_fits_logs_its_parts_and_learns(tiny_gpt2, tokenizer_dir, tmp_path):
    module = make_dpo(tiny_gpt2, tokenizer_dir, loss_type="bonbon", bonbon_alpha=0.1)
    records = {k: RecordMetric(f"train/{k}") for k in ("loss", "sft_loss", "ipo_loss")}
    trainer = _fit(module, make_preference_dm(preference_pairs(tmp_path, best_of=4), tokenizer_dir), tmp_path, steps=12,
                   callbacks=list(records.values()))
    assert module.bon_n == 4, "n comes from the pairs"
    loss, sft, ipo = (records[k].values for k in ("loss", "sft_loss", "ipo_loss"))
    for total, s, i in zip(loss, sft, ipo, strict=True):
        assert total == pytest.approx(0.1 * s + 0.9 * i, rel=1e-5)
    # at the start π = ref, h = 0: the IPO part is m_4² = 5.5² = 30.25; training moves h towards 5.5
    assert ipo[0] == pytest.approx(30.25, rel=1e-5) and ipo[-1] < ipo[0] / 2
    metrics = trainer.callback_metrics
    assert metrics["val/ipo_loss"] < 30.25 and metrics["val/sft_loss"] > 0
    assert metrics["val/rewards/margins"].item() > 0


@pytest.mark.parametrize("loss_type", ["sigmoid", "bonbon"])
def test_the_gradient_does_not_depend_on_the_batch_cut(tiny_gpt2, tokenizer_dir, tmp_path, loss_type):
    """The mean over 8 pairs of uneven lengths is the mean of the means over its two halves: what
    DDP's gradient average over 2 ranks of 4 pairs, and accumulation over 2 batches, make of it
    (test_ddp.py runs the 2 ranks for sigmoid). BoNBoN's two terms are both means over pairs."""
    best_of = {"pairs": "best_worst", "samples_per_prompt": 8} if loss_type == "bonbon" else {}
    rows = [{"prompt": f"the movie {i}", "chosen": " was great" + " and good" * (i % 3),
             "rejected": " was awful" + " and dull" * (i % 4), **best_of} for i in range(16)]
    data = str(write_jsonl(tmp_path / "pairs" / "train.jsonl", rows).parent)
    module = make_dpo(tiny_gpt2, tokenizer_dir, loss_type=loss_type, bon_n=8 if best_of else None)

    def grad(batch_size: int) -> torch.Tensor:
        dm = make_preference_dm(data, tokenizer_dir, batch_size=batch_size)
        dm.setup("fit")
        module.policy.zero_grad()
        batches = list(dm.ordered_loader("train"))[: 8 // batch_size]
        for batch in batches:
            (module._step(batch)[0] / len(batches)).backward()
        return torch.cat([p.grad.reshape(-1) for p in module.policy.parameters() if p.grad is not None])

    whole, halves = grad(8), grad(4)
    assert whole.norm() > 0
    assert ((whole - halves).norm() / whole.norm()).item() <= 1e-5


def test_bonbon_takes_the_temperature_its_pairs_were_sampled_at(tiny_gpt2, tokenizer_dir, tmp_path):
    """BoNBoN imitates the Best-of-n policy of the tempered reference: the pairs' settings.json says
    T = 0.7, so log-probs at T = 1 are refused, and at 0.7 they are those of softmax(logits / 0.7)."""
    data = preference_pairs(tmp_path, best_of=4)
    (Path(data) / "settings.json").write_text(json.dumps({"temperature": 0.7}))
    with pytest.raises(ConfigError, match=r"sampled at temperature 0.7 but model.init_args.temperature is 1.0"):
        _fit(make_dpo(tiny_gpt2, tokenizer_dir, loss_type="bonbon"), make_preference_dm(data, tokenizer_dir), tmp_path)
    module = make_dpo(tiny_gpt2, tokenizer_dir, loss_type="bonbon", temperature=0.7)
    _fit(module, make_preference_dm(data, tokenizer_dir), tmp_path)
    dm = make_preference_dm(data, tokenizer_dir)
    dm.setup("fit")
    batch = next(iter(dm.ordered_loader("train")))
    policy, _ = module._logprobs(batch, policy_grad=True)
    ids = torch.cat([batch["queries"], batch["chosen"]], -1)
    mask = torch.cat([batch["query_mask"], batch["chosen_mask"]], -1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = module.policy(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits.float()
    r = batch["chosen"].shape[1]
    token = logprobs_from_logits(logits[:, -r - 1:-1] / 0.7, batch["chosen"])
    expected = (token * batch["chosen_mask"]).sum(-1)
    torch.testing.assert_close(policy[: len(expected)], expected, atol=1e-4, rtol=1e-4)
