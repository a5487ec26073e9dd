"""Interrupted runs lose nothing and say so: signals to a real subprocess or in-process (exit status 143 for
SIGTERM, from `lightning-rlhf fit` and the pipeline), atomic checkpoint writes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec.implementations.local as fs_local
import lightning as L
import pytest
import torch
import yaml
from helpers import ppo_config, sft_config
from lightning.pytorch.demos.boring_classes import BoringModel

from lightning_rlhf.cli import build_cli, cli_main
from lightning_rlhf.pipeline import main as pipeline_main


class SigtermAt(L.Callback):
    """Sends this process SIGTERM after training step ``step``, as a scheduler would (in-process: fast)."""

    def __init__(self, step: int = 2) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _start(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, reward_dir) -> tuple[subprocess.Popen, Path]:
    config = ppo_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, reward_dir)
    data = yaml.safe_load(config.read_text())
    data["trainer"]["max_steps"] = 10_000
    data["trainer"]["callbacks"] = []
    data["checkpoint"]["every_n_train_steps"] = 1
    config.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, "-m", "lightning_rlhf", "fit", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600  # generous: a loaded machine starts slowly
    while not (tmp_path / "ckpt" / "last.ckpt").exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"training did not start:\n{proc.stdout.read()}")
        time.sleep(0.2)
    return proc, config


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_signal_writes_a_resumable_checkpoint(sig, tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir,
                                              tiny_classifier_dir):
    reward_dir = tiny_classifier_dir({0: "NEGATIVE", 1: "POSITIVE"})
    proc, config = _start(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, reward_dir)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 1), out  # 143 = 128 + SIGTERM
    saved = tmp_path / "ckpt" / "interrupted.ckpt"
    assert saved.exists(), out
    step = torch.load(saved, weights_only=False)["global_step"]
    assert step >= 1
    resumed = build_cli(["fit", "--config", str(config), "--trainer.max_steps", str(step + 2),
                         "--trainer.callbacks", "[]", "--ckpt_path", str(saved)])
    assert resumed.trainer.global_step == step + 2


def _sigterm_at_step_2(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir) -> Path:
    config = sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    data = yaml.safe_load(config.read_text())
    data["trainer"]["callbacks"] = [{"class_path": "test_interrupt.SigtermAt", "init_args": {"step": 2}}]
    config.write_text(yaml.safe_dump(data))
    return config


@pytest.mark.parametrize("command", ["fit", "pipeline"])
def test_sigterm_saves_then_exits_143(command, tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, capsys):
    """Lightning ends a SIGTERM-ed fit as SystemExit(None), exit status 0; both commands say 143 instead."""
    config = _sigterm_at_step_2(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    if command == "pipeline":
        (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({"stages": ["sft"]}))
    with pytest.raises(SystemExit) as stop:
        if command == "fit":
            cli_main(["fit", "--config", str(config)])
        else:
            pipeline_main(["--configs", str(tmp_path), "--data", imdb_dir])
    assert stop.value.code == 143
    assert torch.load(tmp_path / "ckpt" / "interrupted.ckpt", weights_only=False)["global_step"] == 2
    assert not (tmp_path / "export").exists()
    if command == "pipeline":
        assert "== sft: interrupted after" in capsys.readouterr().out
        summary = json.loads((tmp_path / "pipeline_summary.json").read_text())
        assert summary["sft"]["interrupted"] is True


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = BoringModel()
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    trainer.fit(model)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    good = path.read_bytes()

    original_write = fs_local.LocalFileOpener.write

    def half_then_fail(self, data):
        original_write(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(fs_local.LocalFileOpener, "write", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    torch.load(path, weights_only=False)
