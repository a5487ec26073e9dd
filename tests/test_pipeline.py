"""A preset folder of tiny configs through ``lightning-rlhf-pipeline --configs``: stages, eval, summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import TINY_DISTILBERT, TINY_GPT2

from lightning_rlhf.errors import ConfigError
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
    # and BoNBoN beside it: its own pairs (preferences-bonbon: best against worst of 3) into its own folder
    bonbon = yaml.safe_load((preset / "dpo.yaml").read_text())
    bonbon["model"]["init_args"].update(loss_type="bonbon", temperature=0.7, export_dir=str(art / "bonbon"))
    bonbon["data"]["data_path"] = str(art / "pairs-bonbon")
    _write(preset / "bonbon.yaml", bonbon)
    plan = yaml.safe_load((preset / "pipeline.yaml").read_text())
    plan["preferences"] = {"policy": str(art / "sft"), "reward_model": str(art / "reward"), "num_prompts": 8,
                           "max_new_tokens": 4}
    plan["preferences-bonbon"] = {"pairs": "best_worst", "samples_per_prompt": 3}
    _write(preset / "pipeline.yaml", plan)
    pipeline_main(["--configs", str(preset), "--data", imdb_dir, "--algo", "ppo,dpo,bonbon", "--skip-existing"])
    out = capsys.readouterr().out
    assert "== dpo_pairs: done in" in out and "== dpo: done in" in out
    assert "== bonbon_pairs: done in" in out and "== bonbon: done in" in out
    assert list(json.loads((art / "eval" / "metrics.json").read_text())["policies"]) == ["sft", "ppo", "dpo", "bonbon"]
    assert (art / "pairs" / "train-00000.jsonl").exists() and (art / "dpo" / "model.safetensors").exists()
    assert (art / "bonbon" / "model.safetensors").exists()
    dpo_row = json.loads((art / "pairs" / "train-00000.jsonl").open().readline())
    bonbon_rows = [json.loads(line) for line in (art / "pairs-bonbon" / "train-00000.jsonl").open()]
    assert "samples_per_prompt" not in dpo_row and len(bonbon_rows) <= 8
    assert all(r["pairs"] == "best_worst" and r["samples_per_prompt"] == 3 for r in bonbon_rows)

    pipeline_main(["--configs", str(preset), "--data", imdb_dir, "--skip-existing"])
    assert "== ppo: " + str(art / "ppo") + " exists, skipped" in capsys.readouterr().out


def test_shipped_presets_make_bonbon_its_own_best_of_8_pairs():
    """``--algo bonbon`` makes best-against-worst-of-8 pairs into bonbon.yaml's data_path, apart from DPO's."""
    from lightning_rlhf.pipeline import pair_settings

    repo = Path(__file__).resolve().parents[1] / "configs"
    for preset in ("offline", "gpt2"):
        plan = yaml.safe_load((repo / preset / "pipeline.yaml").read_text())
        dpo, bonbon = pair_settings(repo / preset, plan, "dpo"), pair_settings(repo / preset, plan, "bonbon")
        assert bonbon == {**dpo, **plan["preferences-bonbon"]}
        assert (bonbon["pairs"], bonbon["samples_per_prompt"], dpo.get("pairs", "all")) == ("best_worst", 8, "all")
        paths = {name: yaml.safe_load((repo / preset / f"{name}.yaml").read_text())["data"]["data_path"]
                 for name in ("dpo", "bonbon")}
        assert paths["bonbon"] == f"artifacts/{preset}/preferences-bonbon" != paths["dpo"]
    with pytest.raises(ConfigError, match="preferences-bonbon must be a mapping"):
        pair_settings(repo / "offline", {"preferences-bonbon": ["best_worst"]}, "bonbon")
