import json
import math

import pytest

from lightning_rlhf.evaluation import distinct_n, mean_ci95
from lightning_rlhf.evaluation.cli import main

FIGURES = {"n", "reward_mean", "reward_ci95", "positive_rate", "kl_to_reference",
           "perplexity_under_reference", "distinct_1", "distinct_2", "mean_length_tokens"}


def test_metrics_by_hand():
    mean, lo, hi = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(1.96 / math.sqrt(3))
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n([""], 2) == 0.0


def test_eval_writes_figures_samples_and_report(tmp_path, tiny_policy_dirs, imdb_dir, tiny_classifier_dir):
    out = tmp_path / "eval"
    main(["--policy", f"before={tiny_policy_dirs['before']}",
          "--policy", f"after={tiny_policy_dirs['after']}",
          "--reference", tiny_policy_dirs["before"],
          "--reward-model", tiny_classifier_dir({0: "NEGATIVE", 1: "POSITIVE"}),
          "--data", imdb_dir, "--num-prompts", "16", "--max-new-tokens", "5", "--batch-size", "8",
          "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())["policies"]
    assert set(metrics) == {"before", "after"}
    for figures in metrics.values():
        assert set(figures) == FIGURES and figures["n"] == 16
        assert math.isfinite(figures["perplexity_under_reference"])
        assert 0 <= figures["positive_rate"] <= 1
    assert metrics["before"]["kl_to_reference"] == pytest.approx(0.0, abs=1e-6), "KL of a policy to itself"
    assert metrics["after"]["kl_to_reference"] > 0.01
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {"prompt", "before", "after"} <= set(rows[0])
    report = (out / "report.md").read_text()
    assert "| figure | before | after |" in report and "![reward_vs_kl.png]" in report
    assert (out / "reward_vs_kl.png").stat().st_size > 1000
