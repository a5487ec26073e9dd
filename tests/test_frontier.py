"""The reward-KL frontier: Best-of-N and its KL (bound, estimate, tie-aware exact), the KL estimate
against an enumerated exact KL, the snapshot steps, the gold judge's model, and
``lightning-rlhf-frontier --quick`` end to end with its resume."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers import write_jsonl

from lightning_rlhf.callbacks.snapshots import PolicySnapshots, snapshot_count_problem, snapshot_steps
from lightning_rlhf.errors import ConfigError
from lightning_rlhf.evaluation.best_of_n import (
    best_of_n,
    best_of_n_kl_bound,
    best_of_n_kl_estimate,
    best_of_n_kl_exact,
    empirical_best_of_n_kl,
    sample_candidates,
    select_best_of_n,
)
from lightning_rlhf.evaluation.evaluate import evaluate_policy
from lightning_rlhf.frontier.cli import main as frontier_main
from lightning_rlhf.frontier.plan import FrontierSettings
from lightning_rlhf.frontier.report import COLUMNS, write_frontier
from lightning_rlhf.models.bag_of_ngrams import ngram_ids
from lightning_rlhf.models.loading import build_from_config


def test_best_of_n_kl_bound_by_hand():
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(2) == pytest.approx(math.log(2) - 0.5)  # 0.1931
    assert best_of_n_kl_bound(8) == pytest.approx(2.0794415 - 0.875)  # 1.2044
    with pytest.raises(ValueError):
        best_of_n_kl_bound(0)


def test_best_of_n_kl_exact_by_hand():
    # two equally likely responses, best-of-2: the better is kept with 3/4, the worse with 1/4
    assert best_of_n_kl_exact([0.5, 0.5], [True, True], 2) == pytest.approx(
        0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5))  # 0.1308, below the bound's 0.1931
    # Beirami et al.'s counterexample: with two outcomes the KL never passes log 2; the bound does
    assert best_of_n_kl_exact([0.5, 0.5], [True, True], 64) == pytest.approx(math.log(2))
    assert best_of_n_kl_bound(64) > 3.1
    # a continuum (no ties, no likely outcome) is where the bound is exact; one atom of mass 1: KL 0
    for n in (1, 2, 8, 64):
        assert best_of_n_kl_exact([1.0], [False], n) == pytest.approx(best_of_n_kl_bound(n))
        assert best_of_n_kl_exact([0.25, 0.75], [False, False], n) == pytest.approx(best_of_n_kl_bound(n))
    assert best_of_n_kl_exact([1.0], [True], 8) == 0.0
    with pytest.raises(ValueError):
        best_of_n_kl_exact([0.5, 0.4], [True, True], 2)


def test_best_of_n_kl_estimate_by_hand():
    # n = 2, eps = 1/2: the continuum below, int_0^1/2 2u log(2u) du = -1/8, plus the top atom,
    # kept with 1 - (1/2)^2 = 3/4: 3/4 log(3/4 / 1/2)
    log_eps = torch.tensor([math.log(0.5)])
    assert best_of_n_kl_estimate(log_eps, 2).item() == pytest.approx(-0.125 + 0.75 * math.log(1.5))  # 0.1791
    # it is the exact KL of a continuum of mass 1 - eps under an atom of mass eps
    for n in (2, 8, 64):
        for eps in (0.9, 0.3, 0.01):
            assert best_of_n_kl_estimate(torch.tensor([math.log(eps)], dtype=torch.float64), n).item() == pytest.approx(
                best_of_n_kl_exact([1 - eps, eps], [False, True], n), rel=1e-9)
    # 0 at n = 1 and at eps = 1; below the bound, by eps^3 / 12 at n = 2 (8.3e-8 at eps = 0.01)
    assert best_of_n_kl_estimate(torch.tensor([math.log(0.2), 0.0]), 1).tolist() == [0.0, 0.0]
    assert best_of_n_kl_estimate(torch.tensor([0.0]), 8).item() == 0.0
    gap = best_of_n_kl_bound(2) - best_of_n_kl_estimate(torch.tensor([math.log(0.01)]), 2).item()
    assert gap == pytest.approx(0.01 ** 3 / 12, rel=0.02)
    # whole sentences (eps ~ e^-40, or underflowing to 0) sit on the bound, without NaNs
    far = best_of_n_kl_estimate(torch.tensor([-40.0, -2000.0]), 64)
    assert far.dtype == torch.float64 and far.tolist() == pytest.approx([best_of_n_kl_bound(64)] * 2, abs=1e-12)


def test_empirical_best_of_n_kl_by_hand():
    # four distinct rewards: a continuum, so exactly the bound, for every n
    distinct = torch.tensor([[0.4, 0.1, 0.3, 0.2]])
    for n in (1, 2, 4):
        assert empirical_best_of_n_kl(distinct, n).item() == pytest.approx(best_of_n_kl_bound(n))
    # 0.3 twice (a repeated response): an atom of mass 1/2 between continua of 1/4 below and above.
    # G(u) = u^2 (log 2 + log u - 1/2); the atom gets (3/4)^2 - (1/4)^2 = 1/2 = its mass, adding 0
    tied = torch.tensor([[0.3, 0.3, 0.1, 0.9]])

    def g(u):
        return u * u * (math.log(2) + math.log(u) - 0.5)

    assert empirical_best_of_n_kl(tied, 2).item() == pytest.approx(g(0.25) + 0 + g(1.0) - g(0.75))  # 0.1718
    assert empirical_best_of_n_kl(torch.tensor([[0.5, 0.5, 0.5]]), 2).item() == 0.0  # one response: no KL
    both = empirical_best_of_n_kl(torch.cat([distinct, tied]), 2)
    assert both.tolist() == pytest.approx([best_of_n_kl_bound(2), g(0.25) + g(1.0) - g(0.75)])


def test_select_best_of_n_looks_at_the_first_n_only():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9], [0.7, 0.2, 0.8, 3.0]])
    assert select_best_of_n(scores, 1).tolist() == [0, 0]
    assert select_best_of_n(scores, 2).tolist() == [1, 0]
    assert select_best_of_n(scores, 3).tolist() == [1, 2]
    assert select_best_of_n(scores, 4).tolist() == [1, 3]  # a tie goes to the earlier candidate
    with pytest.raises(ValueError):
        select_best_of_n(scores, 5)


def test_snapshot_steps_by_hand():
    # 200 steps, 8 snapshots: 200 * (k/8)^2 = 3.125 k^2 = 3.125, 12.5, 28.125, 50, 78.125, 112.5,
    # 153.125, 200, halves rounded up; the first (3) is within the first 10% (20 steps)
    assert snapshot_steps(200, 8) == [3, 13, 28, 50, 78, 113, 153, 200]
    # 4 steps, 4 snapshots: 0.25, 1, 2.25, 4 round to 0, 1, 2, 4; each is at least one past the last
    assert snapshot_steps(4, 4) == [1, 2, 3, 4]
    assert snapshot_steps(3, 8) == [1, 2, 3]  # a run shorter than its snapshots: every step
    for total in range(4, 300):
        for count in range(4, min(total, 12) + 1):
            steps = snapshot_steps(total, count)
            assert len(set(steps)) == count and steps == sorted(steps) and steps[-1] == total
            assert steps[0] <= max(1, 0.1 * total), (total, count, steps)


def test_snapshot_counts_that_miss_the_first_tenth_are_refused(tmp_path):
    assert "at least 2" in snapshot_count_problem(1)
    for count in (2, 3):  # 1/4 and 1/9 of the steps: after the first 10%
        assert f"1/{count}^2" in snapshot_count_problem(count)
    assert snapshot_count_problem(4) is None and snapshot_count_problem(8) is None
    assert FrontierSettings().snapshots == 8
    with pytest.raises(ConfigError):
        PolicySnapshots(str(tmp_path), num_snapshots=3)
    # a resumed run exports only the snapshots it has not passed, at the same steps
    callback = PolicySnapshots(str(tmp_path))
    callback.on_train_start(SimpleNamespace(estimated_stepping_batches=200, global_step=50), None)
    assert callback._due == [78, 113, 153, 200]


def test_report_draws_best_of_n_at_the_estimate_beside_the_bound(tmp_path):
    figures = {"reward_ci95": [0.0, 1.0], "distinct_2": 0.5, "perplexity_under_reference": 9.0,
               "mean_length_tokens": 24.0}
    results = [
        {"method": "sft", "seed": None, "points": [{"step": 0, "kl_to_reference": 0.0, "reward_mean": 0.1, **figures}]},
        {"method": "best-of-n", "seed": 1, "points": [
            {"best_of": 8, "kl_to_reference": 1.1, "kl_estimate": 1.1, "kl_bound": 1.2, "kl_empirical": 1.15,
             "reward_mean": 0.6, **figures}]},
        {"method": "best-of-n", "seed": 2, "points": [  # cached before the estimate: the bound only
            {"best_of": 8, "kl_to_reference": 1.2, "kl_is_bound": True, "reward_mean": 0.8, **figures}]},
        {"method": "ppo", "seed": 1, "points": [{"step": 3, "kl_to_reference": 0.4, "reward_mean": 0.3, **figures}]}]
    data = write_frontier(results, tmp_path, {"num_prompts": 1, "max_new_tokens": 24, "temperature": 0.7,
                                              "reward_model": "r", "judge": None})
    rows = {(r["method"], r["seed"]): r for r in data["points"]}
    assert (rows["best-of-n", 1]["kl"], rows["best-of-n", 1]["kl_bound"]) == (1.1, 1.2)
    assert (rows["best-of-n", 2]["kl"], rows["best-of-n", 2]["kl_bound"]) == (1.2, 1.2)
    assert rows["ppo", 1]["kl"] == 0.4 and rows["ppo", 1]["kl_bound"] is None  # trained: its sampled KL
    bon = next(m for m in data["seed_means"] if m["method"] == "best-of-n")
    assert (bon["kl"], bon["kl_bound"], bon["kl_empirical"]) == pytest.approx((1.15, 1.2, 1.15))
    table = (tmp_path / "frontier.md").read_text()
    assert "| KL (nats) | KL bound |" in table and "| best-of-n | 8 | 2 | 1.15 | 1.20 |" in table
    with open(tmp_path / "frontier.csv") as f:
        assert next(csv.reader(f)) == COLUMNS
    assert (tmp_path / "frontier.png").stat().st_size > 0


def count_e(prompts, responses):
    return torch.tensor([r.count("e") / max(1, len(r)) for r in responses])


def test_best_of_n_picks_the_best_candidate_and_is_monotone(tiny_policy_dirs):
    prompts = ["the movie", "this film was", "a"]
    results = best_of_n(tiny_policy_dirs["before"], count_e, prompts, [1, 2, 4], max_new_tokens=6,
                        temperature=1.5, batch_size=8, seed=0)
    assert [r.name for r in results] == ["best-of-1", "best-of-2", "best-of-4"]
    rewards = [r.figures["reward_mean"] for r in results]
    assert rewards[0] <= rewards[1] <= rewards[2] and rewards[0] < rewards[2]
    assert [r.figures["kl_bound"] for r in results] == [best_of_n_kl_bound(n) for n in (1, 2, 4)]
    # best-of-4 is the max over the same 4 candidates that best-of-1 and -2 chose from
    cand = sample_candidates(tiny_policy_dirs["before"], prompts, 4, 6, 1.5, 8, 0, False, torch.device("cpu"))
    scores = torch.stack([count_e([p] * 4, row) for p, row in zip(prompts, cand.texts, strict=True)])  # (3, 4)
    assert results[2].rewards == pytest.approx(scores.max(-1).values.tolist())
    assert results[0].responses == [row[0] for row in cand.texts]
    # the KL figures come from these samples: the estimate from the selected responses' log pi_ref
    # at the sampling temperature, the empirical KL from all 4 candidates' rewards
    assert cand.logprob.shape == (3, 4) and bool((cand.logprob < 0).all())
    for r, n in zip(results, (1, 2, 4), strict=True):
        pick = select_best_of_n(scores, n)
        log_eps = cand.logprob[torch.arange(3), pick]
        assert r.figures["kl_estimate"] == pytest.approx(best_of_n_kl_estimate(log_eps, n).mean().item())
        assert r.figures["kl_to_reference"] == r.figures["kl_estimate"] <= r.figures["kl_bound"] + 1e-12
        assert r.figures["kl_empirical"] == pytest.approx(empirical_best_of_n_kl(scores, n).mean().item())


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
        dm.setup("test")
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
    assert [r["point"] for r in rows if r["method"] == "ppo"] == ["1", "2", "3", "4"]  # --quick: 4 of 4 steps
    assert sorted(p.name for p in (out / "runs" / "ppo-seed3" / "snapshots").iterdir()) == [
        "step-1", "step-2", "step-3", "step-4"]
    for r in rows:  # Best-of-N at its estimate, with the bound beside it; trained policies have none
        if r["method"] == "best-of-n":
            assert float(r["kl_bound"]) == pytest.approx(best_of_n_kl_bound(int(r["point"])))
            assert float(r["kl"]) <= float(r["kl_bound"]) + 1e-9 and r["kl_empirical"] != ""
        else:
            assert r["kl_bound"] == ""
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
    # Best-of-N points cached before the KL estimate are sampled again (same seed: same points)
    bon = out / "points" / "best-of-n-seed3.json"
    cached = json.loads(bon.read_text())
    for p in cached["points"]:
        del p["kl_estimate"]
    bon.write_text(json.dumps(cached))
    frontier_main(["--config", str(config), "--quick"])
    assert "predate the KL estimate" in capsys.readouterr().out
    assert all("kl_estimate" in p for p in json.loads(bon.read_text())["points"])
    assert (out / "frontier.csv").read_text() == before
    done.unlink()
    (out / "points" / "ppo-seed3.json").unlink()
    frontier_main(["--config", str(config), "--quick"])
    assert "== ppo-seed3: resuming" in capsys.readouterr().out
    assert (out / "frontier.csv").read_text() == before


def test_frontier_bad_settings_end_in_one_error_line(tmp_path, capsys):
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({"methods": {"ppo": {"config": "missing.yaml"}}}))
    (tmp_path / "one.yaml").write_text(yaml.safe_dump({"best_of_n": [1, 2], "snapshots": 1}))
    (tmp_path / "three.yaml").write_text(yaml.safe_dump({"best_of_n": [1, 2], "snapshots": 3}))
    for args, message in ((["--config", str(tmp_path / "nope.yaml")], "do not exist"),
                          (["--config", str(tmp_path / "f.yaml")], "names '"),
                          (["--config", str(tmp_path / "one.yaml")], "snapshots must be at least 2"),
                          (["--config", str(tmp_path / "three.yaml")], "after the first 10%")):
        with pytest.raises(SystemExit) as exit_:
            frontier_main(args)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]

