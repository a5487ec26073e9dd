"""A preset folder of tiny configs through ``lightning-rlhf-pipeline --configs``: stages, eval, summary."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import TINY_DISTILBERT, TINY_GPT2

from lightning_rlhf.pipeline import main as pipeline_main


def _write(path: Path, config: dict) -> None:
    path.write_text(yaml.safe_dump(config))


def test_pipeline_runs_a_preset_folder(tmp_path, tokenizer_dir, imdb_dir, capsys):
    art, preset = tmp_path / "artifacts", tmp_path / "preset"
    preset.mkdir()
    gpt2 = {**TINY_GPT2, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}

    def trainer(name: str) -> dict:
        return {"accelerator": "cpu", "max_steps": 2, "limit_val_batches": 1, "enable_model_summary": False,
                "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                           "init_args": {"save_dir": str(art / "logs"), "name": name}}}

    data = {"data_path": "unused", "tokenizer": tokenizer_dir, "val_size": 20}
    _write(preset / "sft.yaml", {
        "trainer": trainer("sft"),
        "model": {"class_path": "lightning_rlhf.modules.SFTModule", "init_args": {
            "model_name_or_path": None, "model_config": gpt2, "tokenizer_name_or_path": tokenizer_dir,
            "export_dir": str(art / "sft")}},
        "data": {**data, "shape": "lm", "block_size": 16, "batch_size": 4}})
    _write(preset / "reward.yaml", {
        "trainer": trainer("reward"),
        "model": {"class_path": "lightning_rlhf.modules.RewardModelModule", "init_args": {
            "model_name_or_path": None, "model_config": TINY_DISTILBERT, "tokenizer_name_or_path": tokenizer_dir,
            "export_dir": str(art / "reward")}},
        "checkpoint": {"monitor": "val/acc", "mode": "max"},
        "data": {**data, "shape": "classification", "batch_size": 8, "max_length": 64}})
    _write(preset / "ppo.yaml", {
        "trainer": trainer("ppo"),
        "model": {"class_path": "lightning_rlhf.modules.PPOModule", "init_args": { "compile_generation": False,
            "policy_name_or_path": str(art / "sft"), "reward_model": str(art / "reward"), "ppo_epochs": 1,
            "response_min_tokens": 4, "response_max_tokens": 4, "export_dir": str(art / "ppo")}},
        "data": {**data, "tokenizer": str(art / "sft"), "shape": "prompts", "batch_size": 8,
                 "min_review_chars": 50, "prompt_min_tokens": 2, "prompt_max_tokens": 5}})
    _write(preset / "pipeline.yaml", {"stages": ["sft", "reward", "ppo"], "test": ["reward"],
                                      "evaluate": {"policies": ["sft", "ppo"], "num_prompts": 8}})

    pipeline_main(["--configs", str(preset), "--data", imdb_dir])
    out = capsys.readouterr().out
    for stage in ("sft", "reward", "reward_test", "ppo", "eval"):
        assert f"== {stage}: started" in out and f"== {stage}: done in" in out
    assert f"data: {imdb_dir} (local copy)" in out
    summary = json.loads((art / "pipeline_summary.json").read_text())
    assert list(summary) == ["sft", "reward", "reward_test", "ppo", "eval"]
    assert summary["eval"]["sft/kl_to_reference"] == 0.0 and "ppo/reward_mean" in summary["eval"]
    assert (art / "eval" / "report.md").exists()

    # --algo: a critic-free sibling beside PPO, both in one report; the existing exports are reused
    rloo = yaml.safe_load((preset / "ppo.yaml").read_text())
    rloo["model"]["init_args"].update(advantage_estimator="rloo", samples_per_prompt=2, export_dir=str(art / "rloo"))
    rloo["data"]["batch_size"] = 4
    rloo["trainer"]["logger"]["init_args"]["name"] = "rloo"
    _write(preset / "rloo.yaml", rloo)
    pipeline_main(["--configs", str(preset), "--data", imdb_dir, "--algo", "ppo,rloo", "--skip-existing"])
    out = capsys.readouterr().out
    assert "stages: sft -> reward -> ppo -> rloo -> eval" in out
    assert "== ppo: " in out and "exists, skipped" in out and "== rloo: done in" in out
    evaluated = json.loads((art / "eval" / "metrics.json").read_text())["policies"]
    assert list(evaluated) == ["sft", "ppo", "rloo"]
    assert (art / "rloo" / "model.safetensors").exists()

    # --algo dpo: preference pairs from the SFT export scored by the reward export, then DPO
    _write(preset / "dpo.yaml", {
        "trainer": trainer("dpo"),
        "model": {"class_path": "lightning_rlhf.modules.DPOModule", "init_args": {
            "policy_name_or_path": str(art / "sft"), "export_dir": str(art / "dpo")}},
        "data": {**data, "data_path": str(art / "pairs"), "tokenizer": str(art / "sft"), "shape": "preferences",
                 "batch_size": 4, "val_size": 4, "max_length": 32}})
    plan = yaml.safe_load((preset / "pipeline.yaml").read_text())
    plan["preferences"] = {"policy": str(art / "sft"), "reward_model": str(art / "reward"), "num_prompts": 8,
                           "max_new_tokens": 4}
    _write(preset / "pipeline.yaml", plan)
    pipeline_main(["--configs", str(preset), "--data", imdb_dir, "--algo", "ppo,dpo", "--skip-existing"])
    out = capsys.readouterr().out
    assert "== dpo_pairs: done in" in out and "== dpo: done in" in out
    assert list(json.loads((art / "eval" / "metrics.json").read_text())["policies"]) == ["sft", "ppo", "dpo"]
    assert (art / "pairs" / "train-00000.jsonl").exists() and (art / "dpo" / "model.safetensors").exists()

    pipeline_main(["--configs", str(preset), "--data", imdb_dir, "--skip-existing"])
    assert "== ppo: " + str(art / "ppo") + " exists, skipped" in capsys.readouterr().out
