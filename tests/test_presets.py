"""``--preset NAME`` finds ``configs/NAME`` from any folder; the quick preset mirrors the offline one
at a small scale and labels its report a smoke run."""

from __future__ import annotations

from pathlib import Path

import yaml

import lightning_rlhf.evaluation.cli as eval_cli
from lightning_rlhf.pipeline import SHIPPED_PRESETS, _evaluate, known_presets, preset_folder

REPO = Path(__file__).resolve().parents[1]


def _merge(base: dict, top: dict) -> dict:
    return {**base, **{k: _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                       for k, v in top.items()}}


def _stage(preset: str, name: str) -> dict:
    """A stage config with its ``base:`` chain applied (mappings merge key by key)."""
    path = REPO / "configs" / preset / f"{name}.yaml"
    config = yaml.safe_load(path.read_text())
    base = config.pop("base", None)
    return _merge(_stage(preset, Path(base).stem), config) if base else config


def test_a_preset_is_found_from_any_folder_and_the_working_folders_comes_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the checkout's
    assert SHIPPED_PRESETS == REPO / "configs"
    assert preset_folder("quick") == REPO / "configs" / "quick"
    assert {"offline", "quick", "gpt2"} <= set(known_presets())
    (tmp_path / "configs" / "quick").mkdir(parents=True)
    (tmp_path / "configs" / "quick" / "pipeline.yaml").write_text("stages: [sft]\n")
    assert preset_folder("quick") == Path("configs/quick"), "a copy in the working folder wins"
    assert preset_folder("nope") == Path("configs/nope"), "an unknown name keeps the path the error names"


def test_the_quick_preset_is_the_offline_one_smaller():
    quick = yaml.safe_load((REPO / "configs/quick/pipeline.yaml").read_text())
    offline = yaml.safe_load((REPO / "configs/offline/pipeline.yaml").read_text())
    assert quick["stages"] == offline["stages"] and quick["test"] == offline["test"]
    assert quick["evaluate"]["policies"] == offline["evaluate"]["policies"]
    assert quick["evaluate"]["title"].startswith("Smoke run")
    assert quick["evaluate"]["num_prompts"] < offline["evaluate"]["num_prompts"]
    for name in (*quick["stages"], "rloo", "grpo", "dpo"):
        small, full = _stage("quick", name), _stage("offline", name)
        assert small["model"]["class_path"] == full["model"]["class_path"], name
        assert small["model"]["init_args"]["export_dir"] == f"artifacts/quick/{name}"
        assert small["data"]["shape"] == full["data"]["shape"], name
    assert _stage("quick", "sft")["trainer"]["max_steps"] < _stage("offline", "sft")["trainer"]["max_steps"]
    assert _stage("quick", "ppo")["trainer"]["max_steps"] < _stage("offline", "ppo")["trainer"]["max_steps"]


def test_the_evaluation_gets_the_presets_title(tmp_path, monkeypatch):
    seen = []

    def fake_eval(argv):
        seen.append(argv)
        (tmp_path / "eval").mkdir()
        (tmp_path / "eval" / "metrics.json").write_text('{"policies": {}}')

    monkeypatch.setattr(eval_cli, "main", fake_eval)
    stages = {"sft": {}, "ppo": {"model": {"init_args": {"reward_model": "r"}}}}
    _evaluate(stages, {"sft": "s", "ppo": "p"}, {"policies": ["sft", "ppo"], "title": "Smoke run: x"},
              "data", tmp_path, 8, {})
    argv = seen[0]
    assert argv[argv.index("--title") + 1] == "Smoke run: x"
    seen.clear()
    (tmp_path / "eval" / "metrics.json").unlink()
    (tmp_path / "eval").rmdir()
    _evaluate(stages, {"sft": "s", "ppo": "p"}, {"policies": ["sft", "ppo"]}, "data", tmp_path, 8, {})
    assert "--title" not in seen[0]


def test_the_report_carries_the_title(tmp_path):
    from lightning_rlhf.evaluation.evaluate import PolicyResult
    from lightning_rlhf.evaluation.report import write_report

    figures = {"reward_mean": 0.5, "reward_ci95": [0.25, 0.75], "kl_to_reference": 0.0}
    result = PolicyResult("sft", figures, ["fine"], [0.5])
    plain = write_report([result], ["a film"], tmp_path / "plain", {}).read_text()
    smoke = write_report([result], ["a film"], tmp_path / "smoke", {}, title="Smoke run (--preset quick)").read_text()
    assert plain.startswith("# Evaluation report\n") and smoke.startswith("# Smoke run (--preset quick)\n")
