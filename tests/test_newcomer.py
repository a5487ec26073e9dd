"""Progress lines in logs, exports that truncate, and a first stage that builds its tokenizer."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import yaml
from helpers import make_dm, make_ppo

from lightning_rlhf.callbacks import RunProgress
from lightning_rlhf.callbacks.progress import batches_in_run
from lightning_rlhf.export import export_pretrained
from lightning_rlhf.models.loading import build_from_config


def test_plain_progress_lines_with_the_runs_real_totals(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, capsys):
    """PPO takes ppo_epochs x num_mini_batches optimizer steps per batch: 8 steps = 4 batches."""
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count", ppo_epochs=2)
    progress = RunProgress(every_percent=25, every_seconds=float("inf"), plain=True)  # by percent only, at any load
    trainer = L.Trainer(max_steps=8, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        enable_model_summary=False, callbacks=[progress])
    trainer.fit(module, make_dm(imdb_dir, tokenizer_dir))
    assert batches_in_run(trainer, module) == 4 < trainer.num_training_batches
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[ppo]")]
    assert "4 batches in the run" in lines[0]
    steps = [line for line in lines if re.match(r"\[ppo\] step \d+/8 \(\d+%\), .* elapsed", line)]
    assert [s.split()[2] for s in steps] == ["2/8", "4/8", "6/8", "8/8"], lines
    assert "reward/score" in steps[-1] and "left" in steps[0]
    assert lines[-1].startswith("[ppo] done: step 8")


def test_exports_truncate_to_the_models_context(tmp_path, tokenizer_dir, tiny_gpt2):
    from helpers import TINY_DISTILBERT
    from transformers import AutoTokenizer, pipeline

    long_text = "the movie was great and the plot was dull " * 60  # far past 64 / 128 positions
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    lm = build_from_config(tiny_gpt2, "causal_lm", seed=0)
    export_pretrained(lm, tok, tmp_path / "lm")
    clf = build_from_config({**TINY_DISTILBERT, "num_labels": 2}, "classifier", seed=0)
    export_pretrained(clf, AutoTokenizer.from_pretrained(tokenizer_dir), tmp_path / "clf")

    assert AutoTokenizer.from_pretrained(tmp_path / "lm").model_max_length == 64
    assert len(AutoTokenizer.from_pretrained(tmp_path / "lm")(long_text, truncation=True)["input_ids"]) == 64
    out = pipeline("text-classification", model=str(tmp_path / "clf"), truncation=True)(long_text)
    assert out and out[0]["label"].startswith("LABEL_")
    prompt = pipeline("text-generation", model=str(tmp_path / "lm"))("the movie", max_new_tokens=2)
    assert prompt[0]["generated_text"].startswith("the movie")


def test_sft_builds_its_tokenizer_when_missing(tmp_path, tiny_gpt2, imdb_dir, capsys):
    from helpers import sft_config

    from lightning_rlhf.cli import build_cli

    built = tmp_path / "tok"
    config_path = sft_config(tmp_path, tiny_gpt2, str(built), imdb_dir)
    config = yaml.safe_load(config_path.read_text())
    config["build_tokenizer"] = {"out": str(built), "vocab_size": 300}
    config["trainer"]["max_steps"] = 2
    config_path.write_text(yaml.safe_dump(config))
    cli = build_cli(["fit", "--config", str(config_path)])
    assert cli.trainer.global_step == 2 and (built / "tokenizer.json").exists()
    assert "building the project tokenizer" in capsys.readouterr().out
    assert len(cli.model.tokenizer) == 300
    first = (built / "tokenizer.json").read_text()
    build_cli(["fit", "--config", str(config_path)])
    assert (built / "tokenizer.json").read_text() == first, "an existing tokenizer is reused, not rebuilt"
    assert Path(tmp_path / "export" / "model.safetensors").exists()


def test_the_cli_replaces_lightnings_default_bar(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    from helpers import sft_config

    from lightning_rlhf.cli import build_cli

    config = sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    cli = build_cli(["--config", str(config), "--trainer.enable_progress_bar", "true"], run=False)
    assert isinstance(cli.trainer.progress_bar_callback, RunProgress)


def test_made_by_names_the_working_directorys_config_first(tmp_path, monkeypatch):
    """CI checks out under a path that sorts before the working directory: the config the user
    runs is the one under their working directory, shown relative to it."""
    import lightning_rlhf.export as export

    repo, cwd = tmp_path / "a_repo", tmp_path / "z_user"
    for root in (repo, cwd):
        (root / "configs" / "offline").mkdir(parents=True)
        (root / "configs" / "offline" / "sft.yaml").write_text(
            yaml.safe_dump({"model": {"init_args": {"export_dir": "artifacts/offline/sft"}}}))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(export, "__file__", str(repo / "lightning_rlhf" / "export.py"))
    assert export.made_by("artifacts/offline/sft") == "lightning-rlhf fit --config configs/offline/sft.yaml"
    assert export.made_by("./artifacts/offline/sft/") == "lightning-rlhf fit --config configs/offline/sft.yaml"
    assert export.made_by("artifacts/other") is None


def test_made_by_follows_base_and_prefers_the_config_that_names_the_folder(tmp_path, monkeypatch):
    """``a.yaml`` inherits its export folder from ``base.yaml``, which names it itself, so the base
    is the answer for that folder; ``b.yaml`` names its own; ``d.yaml``'s folder is named only by a
    base outside configs/, so ``d.yaml`` is; a broken base (``c.yaml``) is skipped."""
    import lightning_rlhf.export as export

    offline = tmp_path / "configs" / "offline"
    offline.mkdir(parents=True)
    (offline / "base.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"export_dir": "artifacts/x"}},
                                                       "build_tokenizer": {"out": "artifacts/tok"}}))
    (offline / "a.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "trainer": {"max_steps": 1}}))
    (offline / "b.yaml").write_text(yaml.safe_dump({"base": "a.yaml", "model": {"init_args": {"export_dir":
                                                                                             "artifacts/y"}}}))
    (offline / "c.yaml").write_text(yaml.safe_dump({"base": "missing.yaml"}))
    (offline / "d.yaml").write_text(yaml.safe_dump({"base": "../../common.yaml"}))  # a base no scan reads
    (tmp_path / "common.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"export_dir": "artifacts/z"}}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(export, "__file__", str(tmp_path / "lightning_rlhf" / "export.py"))
    assert export.made_by("artifacts/x") == "lightning-rlhf fit --config configs/offline/base.yaml"
    assert export.made_by("artifacts/y") == "lightning-rlhf fit --config configs/offline/b.yaml"
    assert export.made_by("artifacts/tok") == "lightning-rlhf fit --config configs/offline/base.yaml"
    assert export.made_by("artifacts/z") == "lightning-rlhf fit --config configs/offline/d.yaml"
