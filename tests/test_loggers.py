"""The sample table and the reward/KL curves of a PPO run reach whichever loggers the Trainer has:
TensorBoard, W&B (offline) and MLflow (a local file store), or none. W&B and MLflow tests skip
without their packages (``pip install -e ".[wandb]"`` / ``".[mlflow]"``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tb_events import read_events

from lightning_rlhf.callbacks.samples import SampleTableLogger
from lightning_rlhf.cli import build_cli
from lightning_rlhf.evaluation.report import read_scalar_curve

STEPS = 3  # PPO iterations (one optimizer step each)
PROMPTS = ["the movie", "a"]
CURVES = ("reward/score", "objective/kl")


def _run_ppo(tmp_path: Path, tiny_gpt2: dict, tokenizer_dir: str, imdb_dir: str, logger: dict | bool):
    """``lightning-rlhf fit`` of a tiny PPO config with ``--trainer.logger`` set to ``logger``; the
    sample table is written at every iteration."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "max_steps": STEPS, "log_every_n_steps": 1, "logger": logger,
            "enable_progress_bar": False, "enable_model_summary": False,
            "callbacks": [{"class_path": "lightning_rlhf.callbacks.SampleTableLogger",
                           "init_args": {"max_new_tokens": 3, "prompts": PROMPTS, "every_n_train_steps": 1,
                                         "on_validation": False}}],
        },
        "model": {"class_path": "lightning_rlhf.modules.PPOModule", "init_args": {
            "compile_generation": False, "policy_name_or_path": None, "policy_config": tiny_gpt2,
            "tokenizer_name_or_path": tokenizer_dir, "reward_model": None, "reward_fn": "helpers:char_count",
            "response_min_tokens": 3, "response_max_tokens": 3, "ppo_epochs": 1, "learning_rate": 1e-3,
            "export_dir": str(tmp_path / "export")}},
        "checkpoint": {"dirpath": str(tmp_path / "ckpt")},
        "data": {"data_path": imdb_dir, "tokenizer": tokenizer_dir, "shape": "prompts", "batch_size": 4,
                 "val_size": 20, "min_review_chars": 50},
    }
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(config))
    return build_cli(["fit", "--config", str(path)])


def _assert_table(columns: list[str], data: list[list]) -> None:
    assert columns == ["prompt", "response", "reward"]
    assert [row[0] for row in data] == PROMPTS
    assert all(isinstance(row[2], float) for row in data)


def test_tensorboard_gets_the_table_and_the_curves(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(tmp_path / "logs"), "name": "ppo"}}
    cli = _run_ppo(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, logger)
    scalars, texts = read_events(cli.trainer.log_dir)
    assert len(texts["samples/text_summary"]) == STEPS
    assert texts["samples/text_summary"][0].startswith("| prompt | response | reward |")
    for tag in CURVES:
        assert [s for s, _ in sorted(scalars[tag])] == list(range(STEPS)), tag
        assert read_scalar_curve(cli.trainer.log_dir, tag) == sorted(scalars[tag])


def test_no_logger_runs_and_generates_no_table(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, monkeypatch):
    calls = []
    original = SampleTableLogger.log_table
    monkeypatch.setattr(SampleTableLogger, "log_table", lambda self, t, m: calls.append(1) or original(self, t, m))
    import lightning_rlhf.modules.ppo as ppo_mod

    sampled = []
    original_rows = ppo_mod.PPOModule.sample_rows
    monkeypatch.setattr(ppo_mod.PPOModule, "sample_rows", lambda self, *a: sampled.append(1) or original_rows(self, *a))
    cli = _run_ppo(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, False)
    assert cli.trainer.global_step == STEPS and len(calls) == STEPS
    assert sampled == [], "with no logger to hold the table, nothing is generated for it"
    assert (tmp_path / "export" / "model.safetensors").exists()


def test_mlflow_gets_table_artifacts_and_the_curves(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.7 refuses a file store without it
    uri = (tmp_path / "mlruns").as_uri()
    logger = {"class_path": "lightning.pytorch.loggers.MLFlowLogger",
              "init_args": {"experiment_name": "ppo", "tracking_uri": uri}}
    cli = _run_ppo(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, logger)
    run_id, client = cli.trainer.logger.run_id, MlflowClient(uri)
    for tag in CURVES:
        history = client.get_metric_history(run_id, tag)
        assert sorted(m.step for m in history) == list(range(STEPS)), tag
        run_folder = tmp_path / "mlruns" / cli.trainer.logger.experiment_id / run_id
        assert read_scalar_curve(run_folder, tag) == sorted((m.step, m.value) for m in history)
    tables = sorted(a.path for a in client.list_artifacts(run_id, "samples"))
    assert tables == [f"samples/step_{s:07d}.json" for s in range(STEPS)]
    table = json.loads(Path(client.download_artifacts(run_id, tables[-1], str(tmp_path / "dl"))).read_text())
    _assert_table(table["columns"], table["data"])


def test_wandb_offline_gets_a_table_and_the_curves(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from wandb.sdk.wandb_run import Run

    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    logged: list[dict] = []
    original = Run.log

    def spy(self, data, *args, **kwargs):
        logged.append(dict(data))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", spy)
    logger = {"class_path": "lightning.pytorch.loggers.WandbLogger",
              "init_args": {"save_dir": str(tmp_path / "wandb"), "project": "lightning-rlhf-test", "offline": True}}
    try:
        cli = _run_ppo(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, logger)
        run_dir = Path(cli.trainer.logger.experiment.dir)
    finally:
        wandb.finish()
    for tag in CURVES:
        assert [d["trainer/global_step"] for d in logged if tag in d] == list(range(STEPS)), tag
    tables = [d["samples"] for d in logged if "samples" in d]
    assert len(tables) == STEPS and all(isinstance(t, wandb.Table) for t in tables)
    _assert_table(tables[-1].columns, tables[-1].data)
    on_disk = sorted((run_dir / "media" / "table").glob("samples_*.table.json"))
    assert len(on_disk) == STEPS
    _assert_table(**{k: v for k, v in json.loads(on_disk[-1].read_text()).items() if k in ("columns", "data")})
