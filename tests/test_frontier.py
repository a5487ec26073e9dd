"""The reward-KL frontier: Best-of-N, the KL estimate against an enumerated exact KL, the gold
judge's model, and ``lightning-rlhf-frontier --quick`` end to end with its resume."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_jsonl

from lightning_rlhf.evaluation.best_of_n import best_of_n, best_of_n_kl_bound, select_best_of_n
from lightning_rlhf.evaluation.evaluate import evaluate_policy
from lightning_rlhf.frontier.cli import main as frontier_main
from lightning_rlhf.frontier.report import COLUMNS
from lightning_rlhf.models.bag_of_ngrams import ngram_ids
from lightning_rlhf.models.loading import build_from_config


def test_best_of_n_kl_bound_by_hand():
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(2) == pytest.approx(math.log(2) - 0.5)  # 0.1931
    assert best_of_n_kl_bound(8) == pytest.approx(2.0794415 - 0.875)  # 1.2044
    with pytest.raises(ValueError):
        best_of_n_kl_bound(0)


def test_select_best_of_n_looks_at_the_first_n_only():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9], [0.7, 0.2, 0.8, 3.0]])
    assert select_best_of_n(scores, 1).tolist() == [0, 0]
    assert select_best_of_n(scores, 2).tolist() == [1, 0]
    assert select_best_of_n(scores, 3).tolist() == [1, 2]
    assert select_best_of_n(scores, 4).tolist() == [1, 3]  # a tie goes to the earlier candidate
    with pytest.raises(ValueError):
        select_best_of_n(scores, 5)


def count_e(prompts, responses):
    return torch.tensor([r.count("e") / max(1, len(r)) for r in responses])


def test_best_of_n_picks_the_best_candidate_and_is_monotone(tiny_policy_dirs):
    prompts = ["the movie", "this film was", "a"]
    results = best_of_n(tiny_policy_dirs["before"], count_e, prompts, [1, 2, 4], max_new_tokens=6,
                        temperature=1.5, batch_size=8, seed=0)
    assert [r.name for r in results] == ["best-of-1", "best-of-2", "best-of-4"]
    rewards = [r.figures["reward_mean"] for r in results]
    assert rewards[0] <= rewards[1] <= rewards[2] and rewards[0] < rewards[2]
    assert [r.figures["kl_to_reference"] for r in results] == [best_of_n_kl_bound(n) for n in (1, 2, 4)]
    assert all(r.figures["kl_is_bound"] for r in results)
    # best-of-4 is the max over the same 4 candidates that best-of-1 and -2 chose from
    from lightning_rlhf.evaluation.best_of_n import sample_candidates

    texts, _, _ = sample_candidates(tiny_policy_dirs["before"], prompts, 4, 6, 1.5, 8, 0, False, torch.device("cpu"))
    best = [max(count_e([p] * 4, row).tolist()) for p, row in zip(prompts, texts, strict=True)]
    assert results[2].rewards == pytest.approx(best)
    assert results[0].responses == [row[0] for row in texts]


@torch.no_grad()
def test_sampled_kl_matches_the_enumerated_kl(tokenizer_dir, tiny_gpt2, tmp_path):
    """Two tiny models whose 2-token responses can be enumerated: the evaluation's sample estimate of
    the sequence-level KL(pi || ref) lies within 4 standard errors of the exact sum."""
    from transformers import AutoTokenizer

    from lightning_rlhf.generation import encode_prompts

    config = {**tiny_gpt2, "initializer_range": 0.3}  # peaked distributions: a KL well above zero
    folders = {}
    for name, seed in (("policy", 0), ("ref", 1)):
        build_from_config(config, "causal_lm", seed=seed).save_pretrained(tmp_path / name)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp_path / name)
        folders[name] = str(tmp_path / name)
    policy = build_from_config(config, "causal_lm", seed=0).eval()
    ref = build_from_config(config, "causal_lm", seed=1).eval()
    tok, t = AutoTokenizer.from_pretrained(tokenizer_dir), 0.7
    prompt = encode_prompts(tok, ["the movie"], torch.device("cpu"))["input_ids"]

    def logp(model, ids):
        return torch.log_softmax(model(ids).logits[:, -1].float() / t, -1)

    p1, r1 = logp(policy, prompt)[0], logp(ref, prompt)[0]  # (V,)
    v = p1.shape[0]
    both = torch.cat([prompt.repeat(v, 1), torch.arange(v).unsqueeze(1)], 1)
    p2, r2 = logp(policy, both), logp(ref, both)  # (V, V): second token given the first
    log_ratio = (p1 - r1).unsqueeze(1) + (p2 - r2)  # (V, V) log pi(y) / ref(y) of every 2-token response
    prob = (p1.unsqueeze(1) + p2).exp()
    exact = float((prob * log_ratio).sum())
    std = float((prob * (log_ratio - exact) ** 2).sum().sqrt())

    n = 3000
    result = evaluate_policy("policy", folders["policy"], ref, count_e, ["the movie"] * n, 2, t, 500, 0, False,
                             torch.device("cpu"))
    assert exact > 0.2
    assert abs(result.figures["kl_to_reference"] - exact) < 4 * std / math.sqrt(n)


def test_ngram_ids_by_hand():
    ids = torch.tensor([[5, 6, 7, 1]])
    mask = torch.tensor([[1, 1, 1, 0]])
    rows, keep = ngram_ids(ids, mask, vocab_size=10, buckets=100, max_ngram=3)
    p = 1_000_003
    bigrams = [10 + (5 * p + 6) % 100, 10 + (6 * p + 7) % 100, 10 + (7 * p + 1) % 100]
    trigrams = [110 + ((5 * p + 6) * p + 7) % 100, 110 + ((6 * p + 7) * p + 1) % 100]
    assert rows.tolist() == [[5, 6, 7, 1, *bigrams, *trigrams]]
    assert keep.tolist() == [[1, 1, 1, 0, 1, 1, 0, 1, 0]]


def test_bag_of_ngrams_export_loads_with_pipeline_without_the_package(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    model = build_from_config({"model_type": "bag-of-ngrams", "vocab_size": 300, "ngram_buckets": 64, "embed_dim": 4,
                               "num_labels": 2, "id2label": {0: "NEGATIVE", 1: "POSITIVE"},
                               "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}, "classifier", seed=0)
    model.save_pretrained(tmp_path / "judge")
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp_path / "judge")
    assert (tmp_path / "judge" / "bag_of_ngrams.py").exists()
    code = ("import sys; from transformers import pipeline; "
            f"p = pipeline('text-classification', model={str(tmp_path / 'judge')!r}, trust_remote_code=True); "
            "print(p('a great movie')[0]['label']); print('lightning_rlhf' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    label, imported = out.stdout.split()[-2:]
    assert label in ("POSITIVE", "NEGATIVE") and imported == "False"


def test_judge_split_never_sees_the_reward_models_reviews(tokenizer_dir, imdb_dir):
    from lightning_rlhf.data import IMDBDataModule

    def splits(**kw):
        dm = IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="classification", val_size=20,
                            max_eval_samples=30, seed=0, **kw)
        dm.setup("fit")
        return {name: [tuple(x) for x in ds["input_ids"]] for name, ds in dm.splits.items()}

    reward, judge = splits(), splits(train_split="test")
    assert len(judge["train"]) == 80 - 30 and len(judge["test"]) == 30
    assert judge["test"] == reward["test"], "both are tested on the same reviews"
    assert not set(judge["train"]) & (set(reward["train"]) | set(reward["validation"]) | set(judge["test"]))


def _tiny_sweep(tmp_path: Path, tokenizer_dir: str, tiny_gpt2: dict, tiny_classifier_dir, imdb_dir: str) -> Path:
    from transformers import AutoTokenizer

    sft = tmp_path / "sft"
    build_from_config(tiny_gpt2, "causal_lm", seed=0).save_pretrained(sft)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(sft)
    reward = tiny_classifier_dir({0: "NEGATIVE", 1: "POSITIVE"})
    judge = tmp_path / "judge"
    build_from_config({"model_type": "bag-of-ngrams", "vocab_size": 300, "ngram_buckets": 64, "embed_dim": 4,
                       "num_labels": 2, "id2label": {0: "NEGATIVE", 1: "POSITIVE"},
                       "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}, "classifier", seed=0).save_pretrained(judge)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(judge)
    pairs = write_jsonl(tmp_path / "pairs" / "train.jsonl",
                        [{"prompt": "the movie", "chosen": " was great", "rejected": " was awful"}] * 40)
    trainer = {"accelerator": "cpu", "limit_val_batches": 1, "val_check_interval": 2, "enable_model_summary": False,
               "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                          "init_args": {"save_dir": "unused", "name": "x"}}}
    (tmp_path / "ppo.yaml").write_text(yaml.safe_dump({
        "trainer": {**trainer, "max_steps": 40},
        "model": {"class_path": "lightning_rlhf.modules.PPOModule", "init_args": { "compile_generation": False,
            "policy_name_or_path": str(sft), "reward_model": reward, "ppo_epochs": 1, "response_min_tokens": 4,
            "response_max_tokens": 4}},
        "data": {"data_path": "unused", "tokenizer": str(sft), "shape": "prompts", "batch_size": 8, "val_size": 20,
                 "min_review_chars": 50}}))
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump({
        "trainer": {**trainer, "max_epochs": 1},
        "model": {"class_path": "lightning_rlhf.modules.DPOModule", "init_args": {
            "policy_name_or_path": str(sft), "learning_rate": 1e-3}},
        "data": {"data_path": str(pairs.parent), "tokenizer": str(sft), "shape": "preferences", "batch_size": 4,
                 "val_size": 8, "max_length": 64}}))
    settings = {"out": str(tmp_path / "frontier"), "reference": str(sft), "reward_model": reward,
                "judge": str(judge), "data": imdb_dir, "seeds": [3, 4], "snapshots": 5, "best_of_n": [1, 2, 4, 8],
                "methods": {"ppo": {"config": "ppo.yaml"}, "dpo": {"config": "dpo.yaml"}}}
    (tmp_path / "frontier.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return tmp_path / "frontier.yaml"


def test_quick_frontier_end_to_end_and_resume(tmp_path, tokenizer_dir, tiny_gpt2, tiny_classifier_dir, imdb_dir,
                                              capsys):
    config = _tiny_sweep(tmp_path, tokenizer_dir, tiny_gpt2, tiny_classifier_dir, imdb_dir)
    out = tmp_path / "frontier"
    frontier_main(["--config", str(config), "--quick"])
    assert "frontier: 2 runs (ppo, dpo x seeds [3])" in capsys.readouterr().out
    for name in ("frontier.json", "frontier.csv", "frontier.md", "frontier.png"):
        assert (out / name).stat().st_size > 0
    with open(out / "frontier.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    assert {r["method"] for r in rows} == {"sft", "best-of-n", "ppo", "dpo"}
    assert [r["point"] for r in rows if r["method"] == "best-of-n"] == ["1", "2", "4"]  # --quick: n <= 4
    assert [r["point"] for r in rows if r["method"] == "ppo"] == ["2", "4"]  # two snapshots of 4 steps
    assert sorted(p.name for p in (out / "runs" / "ppo-seed3" / "snapshots").iterdir()) == ["step-2", "step-4"]
    assert all(r["gold_positive_rate"] != "" for r in rows)
    data = json.loads((out / "frontier.json").read_text())
    assert data["settings"]["seeds"] == [3] and data["points"][0]["method"] == "sft"

    # a re-run does nothing again; a run killed after its fit (done.json and points lost) resumes from
    # its last checkpoint instead of starting over, and the table comes out the same
    before = (out / "frontier.csv").read_text()
    done = out / "runs" / "ppo-seed3" / "done.json"
    stamp = done.stat().st_mtime_ns
    frontier_main(["--config", str(config), "--quick"])
    assert done.stat().st_mtime_ns == stamp and "training" not in capsys.readouterr().out
    assert (out / "frontier.csv").read_text() == before
    done.unlink()
    (out / "points" / "ppo-seed3.json").unlink()
    frontier_main(["--config", str(config), "--quick"])
    assert "== ppo-seed3: resuming" in capsys.readouterr().out
    assert (out / "frontier.csv").read_text() == before


def test_frontier_bad_settings_end_in_one_error_line(tmp_path, capsys):
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({"methods": {"ppo": {"config": "missing.yaml"}}}))
    for args, message in ((["--config", str(tmp_path / "nope.yaml")], "do not exist"),
                          (["--config", str(tmp_path / "f.yaml")], "names '")):
        with pytest.raises(SystemExit) as exit_:
            frontier_main(args)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]

