from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import torch
import yaml
from tb_events import read_events
from transformers import pipeline

from lightning_rlhf.cli import build_cli


def _sft_config(tmp_path: Path, tiny_gpt2: dict, tokenizer_dir: str, imdb_dir: str) -> Path:
    config = {
        "seed_everything": 7,
        "trainer": {
            "accelerator": "cpu", "max_steps": 6, "val_check_interval": 3, "limit_val_batches": 2,
            "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp_path / "logs"), "name": "sft"}},
            "callbacks": [{"class_path": "lightning_rlhf.callbacks.SampleTableLogger",
                           "init_args": {"max_new_tokens": 4, "prompts": ["the movie", "a"]}}],
        },
        "model": {"class_path": "lightning_rlhf.modules.SFTModule", "init_args": {
            "model_name_or_path": None, "model_config": tiny_gpt2, "tokenizer_name_or_path": tokenizer_dir,
            "learning_rate": 1e-3, "warmup_steps": 1, "export_dir": str(tmp_path / "export")}},
        "checkpoint": {"monitor": "val/loss", "mode": "min", "dirpath": str(tmp_path / "ckpt")},
        "data": {"data_path": imdb_dir, "tokenizer": tokenizer_dir, "shape": "lm",
                 "block_size": 32, "batch_size": 4, "val_size": 20, "max_train_samples": 60},
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_logs_exports_and_resumes(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    config = _sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    cli = build_cli(["fit", "--config", str(config)])
    assert cli.trainer.global_step == 6
    log_dir = Path(cli.trainer.log_dir)
    assert (log_dir / "config.yaml").exists()
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {"last.ckpt"}
    assert len(list((tmp_path / "ckpt").glob("epoch=*.ckpt"))) == 1  # best by val/loss
    scalars, texts = read_events(log_dir)
    assert {"train/loss", "val/loss", "val/ppl"} <= set(scalars)
    tables = texts["samples/text_summary"]
    assert tables and "| prompt | continuation |" in tables[0] and "the movie" in tables[0]
    assert pipeline("text-generation", model=str(tmp_path / "export"))("a", max_new_tokens=2)

    resumed = build_cli(["fit", "--config", str(config), "--trainer.max_steps", "9",
                         "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")])
    assert resumed.trainer.global_step == 9
    new_scalars, _ = read_events(resumed.trainer.log_dir)
    steps = [s for s, _ in new_scalars["train/loss"]]
    assert min(steps) >= 6, "the resumed run continues from the saved step"
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 9


def test_print_config_lists_the_module(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    config = _sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    out = StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        build_cli(["fit", "--config", str(config), "--print_config"])
    printed = yaml.safe_load(out.getvalue())
    assert printed["model"]["class_path"].endswith("SFTModule")
    assert printed["model"]["init_args"]["learning_rate"] == 1e-3
    assert printed["checkpoint"]["save_last"] is True


def test_unknown_config_key_is_rejected(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    from jsonargparse import ArgumentError

    from lightning_rlhf.errors import user_message

    config = _sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    with pytest.raises(ArgumentError) as caught:
        build_cli(["fit", "--config", str(config), "--model.init_args.learning_rat", "1"])
    assert user_message(caught.value).startswith("model (SFTModule): option 'learning_rat' is not accepted")


def test_every_shipped_config_parses(capsys):
    """Every stage config under configs/ names only arguments that exist, with valid values."""
    repo = Path(__file__).resolve().parents[1]
    configs = sorted(p for p in (repo / "configs").rglob("*.yaml")
                     if p.name != "pipeline.yaml" and not p.name.startswith("frontier"))
    assert {"offline/rloo.yaml", "offline/grpo.yaml", "gpt2/rloo.yaml"} <= {str(p.relative_to(repo / "configs"))
                                                                          for p in configs}
    for config in configs:
        with pytest.raises(SystemExit) as done:
            build_cli(["fit", "--config", str(config), "--print_config"])
        assert done.value.code in (0, None), config
        printed = capsys.readouterr().out
        assert "class_path: lightning_rlhf.modules." in printed, config


def test_every_shipped_frontier_config_loads():
    """The frontier sweeps name fit configs that exist, and only known settings."""
    from lightning_rlhf.frontier import load_settings

    repo = Path(__file__).resolve().parents[1]
    sweeps = sorted((repo / "configs").rglob("frontier*.yaml"))
    assert len(sweeps) >= 3
    for sweep in sweeps:
        settings = load_settings(sweep)
        assert all(run.config.exists() for run in settings.runs()), sweep

