"""FSDP2 through ModelParallelStrategy (``lightning_rlhf.sharding``): 2-process CPU (gloo) runs of
``fsdp2_run.py`` against one process or DDP, the unit cut of a model, and the CLI's answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_DISTILBERT, TINY_GPT2, TINY_LLAMA, write_jsonl
from tb_events import read_events

SCRIPT = Path(__file__).with_name("fsdp2_run.py")


def _run(mode: str, out: Path, tokenizer_dir: str, data: str, devices: int, strategy: str = "fsdp2",
         ckpt: str | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), mode, str(out), tokenizer_dir, data, str(devices), strategy]
                          + ([ckpt] if ckpt else []), capture_output=True, text=True, timeout=300,
                          cwd=SCRIPT.parent, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _ranks(out: Path) -> list[dict]:
    return [json.loads(Path(f"{out}.rank{k}.json").read_text()) for k in (0, 1)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / a.norm()).item()


@pytest.mark.parametrize("mode", ["ppo_update", pytest.param("ppo_clip", marks=pytest.mark.slow)])
def test_a_sharded_ppo_update_is_the_one_process_update(tmp_path, tokenizer_dir, imdb_dir, mode):
    """Each rank trains on its half of a fixed rollout (responses of 4-16 tokens, uneven token
    counts) with its half of every weight; AdamW with eps 10 is linear in the gradient, so a
    summed instead of averaged gradient (pytorch #162338) would double the change. ``ppo_clip``
    clips the global norm of the sharded gradients to 1e-3."""
    for devices in (1, 2):
        _run(mode, tmp_path / f"{devices}.pt", tokenizer_dir, imdb_dir, devices)
    one, two = torch.load(tmp_path / "1.pt"), torch.load(tmp_path / "2.pt")
    assert one.norm() > 0
    assert _rel(one, two) <= 1e-5
    r0, r1 = _ranks(tmp_path / "2.pt")
    assert r0["sharded"] and r0["checksum"] == r1["checksum"], "both ranks gather the same weights"
    if mode == "ppo_clip":  # the first AdamW step is lr * g / (|g| + eps) per weight: norm 1e-3 / 10 after clipping
        assert abs(one.norm().item() - 1e-4) < 1e-6


@pytest.mark.slow
def test_two_adamw_steps_under_fsdp2_are_ddps(tmp_path, tokenizer_dir, imdb_dir):
    """The training optimizer as configured (AdamW, lr 1e-4, clipping to norm 1.0), two PPO
    epochs on the fixed rollout: sharded moments and clipping on DTensors give DDP's weights."""
    for strategy in ("fsdp2", "ddp"):
        _run("ppo_adamw", tmp_path / f"{strategy}.pt", tokenizer_dir, imdb_dir, 2, strategy)
    sharded, ddp = torch.load(tmp_path / "fsdp2.pt"), torch.load(tmp_path / "ddp.pt")
    assert ddp.norm() > 0
    assert _rel(ddp, sharded) <= 1e-5
    for strategy in ("fsdp2", "ddp"):
        r0, r1 = _ranks(tmp_path / f"{strategy}.pt")
        assert r0["checksum"] == r1["checksum"], "both ranks hold the same weights"


@pytest.mark.slow
def test_a_sharded_dpo_step_is_the_one_process_step(tmp_path, tokenizer_dir):
    """SGD on 8 pairs in one process against 4 pairs on each of 2 sharded ranks."""
    rows = [{"prompt": f"the movie {i}", "chosen": " was great" + " and good" * (i % 3),
             "rejected": " was awful" + " and dull" * (i % 4)} for i in range(24)]
    pairs = str(write_jsonl(tmp_path / "pairs" / "train.jsonl", rows).parent)
    for devices in (1, 2):
        _run("dpo", tmp_path / f"{devices}.pt", tokenizer_dir, pairs, devices)
    one, two = torch.load(tmp_path / "1.pt"), torch.load(tmp_path / "2.pt")
    assert one.norm() > 0
    assert _rel(one, two) <= 1e-5
    r0, r1 = _ranks(tmp_path / "2.pt")
    assert r0["sharded"] and r0["checksum"] == r1["checksum"]


@pytest.mark.slow
def test_a_rollout_from_the_sharded_policy_is_ddps_and_gathers_once(tmp_path, tokenizer_dir, imdb_dir):
    """One PPO iteration under fsdp2 and under DDP, 2 ranks each: the same tokens and log-probs on
    each rank, one all-gather per FSDP unit for the whole 8-token rollout (not one per unit per
    token), the same weights after the update, and one full ``save_pretrained`` export from rank 0
    that ``transformers.pipeline`` loads."""
    from safetensors.torch import load_file
    from transformers import pipeline

    for strategy in ("fsdp2", "ddp"):
        _run("rollout", tmp_path / f"{strategy}.pt", tokenizer_dir, imdb_dir, 2, strategy)
    sharded, ddp = _ranks(tmp_path / "fsdp2.pt"), _ranks(tmp_path / "ddp.pt")
    for s, d in zip(sharded, ddp, strict=True):
        assert s["sharded"] and not d["sharded"]
        (ss,), (ds,) = s["steps"], d["steps"]
        assert ss["responses"] == ds["responses"]
        assert torch.allclose(torch.tensor(ss["logprobs"]), torch.tensor(ds["logprobs"]), atol=1e-5)
        assert ss["all_gathers"] == ss["units"] == 7, "policy: root, trunk+head, 2 blocks; reference: 3"
        assert ds["all_gathers"] == 0
        assert s["checksum"] == pytest.approx(d["checksum"], rel=1e-6)
    exported = load_file(tmp_path / "fsdp2.pt.export" / "model.safetensors")
    reference = load_file(tmp_path / "ddp.pt.export" / "model.safetensors")
    assert exported.keys() == reference.keys()
    assert max((exported[k] - reference[k]).abs().max().item() for k in exported) < 1e-5
    generate = pipeline("text-generation", model=str(tmp_path / "fsdp2.pt.export"), device="cpu")
    assert generate("the movie", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("the movie")


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp2", marks=pytest.mark.slow)])
def test_a_two_process_run_resumed_from_its_checkpoint_is_the_straight_run(tmp_path, tokenizer_dir, imdb_dir,
                                                                            strategy):
    """Two PPO iterations on 2 processes, straight and as 1 + 1 resumed from the first run's
    checkpoint (under fsdp2 a folder of per-rank shards and meta.pt): the resumed run starts with
    exactly the weights (value head included), AdamW moments and KL coefficient the first ended
    with, and ends with the straight run's weights on every rank. Each rank samples from its own
    generator, so the checkpoint must carry every rank's generator state, not rank 0's."""
    straight, first, resumed = tmp_path / "straight_2.pt", tmp_path / "first_1.pt", tmp_path / "resumed_2.pt"
    _run("resume", straight, tokenizer_dir, imdb_dir, 2, strategy)
    _run("resume", first, tokenizer_dir, imdb_dir, 2, strategy)
    ckpt = Path(f"{first}.ckpt") / "step=1.ckpt"
    if strategy == "fsdp2":
        assert ckpt.is_dir() and (ckpt / "meta.pt").is_file() and len(list(ckpt.glob("*.distcp"))) == 2
    _run("resume", resumed, tokenizer_dir, imdb_dir, 2, strategy, ckpt=str(ckpt))
    for a, b, c in zip(_ranks(first), _ranks(resumed), _ranks(straight), strict=True):
        assert b["start"] == a["end"], "weights and KL coefficient"
        assert b["optimizer_at_start"] == a["optimizer_at_end"] and a["optimizer_at_end"][0] > 0
        assert len(b["steps"]) == 1 and b["end"] != b["start"], "one more iteration, which trains"
        assert b["steps"][0]["responses"] == c["steps"][1]["responses"], "this rank's own sampling stream"
        assert b["end"] == c["end"] and b["optimizer_at_end"] == c["optimizer_at_end"]
    assert torch.equal(torch.load(resumed), torch.load(straight))


@pytest.mark.parametrize("config, kind, blocks", [
    (TINY_GPT2, "causal", ["GPT2Block"] * 2), (TINY_LLAMA, "causal", ["LlamaDecoderLayer"] * 2),
    ({**TINY_DISTILBERT, "n_layers": 2}, "classifier", ["TransformerBlock"] * 2),
], ids=["gpt2", "llama", "distilbert"])
def test_the_units_are_the_blocks(config, kind, blocks):
    """``_no_split_modules`` names the blocks (GPT-2, Llama); DistilBERT names none, so its
    longest ModuleList is taken."""
    from lightning_rlhf.models.loading import build_from_config
    from lightning_rlhf.sharding import transformer_blocks

    model = build_from_config({**config, "vocab_size": 300}, kind, seed=0)
    found = transformer_blocks(model)
    assert [type(b).__name__ for b in found] == blocks


def test_gathered_is_a_no_op_without_sharding():
    from lightning_rlhf.sharding import gathered

    layer = torch.nn.Linear(2, 2)
    before = layer.weight.clone()
    with gathered(layer, None):
        assert layer.weight is not None
    assert torch.equal(layer.weight, before) and not hasattr(layer, "_get_fsdp_state")


@pytest.mark.parametrize("strategy", [
    ["--trainer.strategy", "fsdp"],
    ["--trainer.strategy", "lightning.pytorch.strategies.FSDPStrategy"],
    ["--trainer.strategy", "{class_path: lightning.pytorch.strategies.FSDPStrategy}"],
], ids=["name", "class", "yaml"])
def test_fsdp1_is_one_error_line_naming_fsdp2(tmp_path, strategy, capsys, monkeypatch):
    from lightning_rlhf.cli import cli_main

    monkeypatch.delenv("LIGHTNING_RLHF_DEBUG", raising=False)
    (tmp_path / "a.yaml").write_text(
        "model:\n  class_path: lightning_rlhf.modules.SFTModule\n  init_args:\n    model_name_or_path: null\n"
        f"    model_config: {json.dumps({**TINY_GPT2, 'vocab_size': 300})}\n"
        f"trainer:\n  accelerator: cpu\n  logger: false\n  default_root_dir: {tmp_path}\n")
    with pytest.raises(SystemExit) as done:
        cli_main(["fit", "--config", str(tmp_path / "a.yaml"), *strategy])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    # (not "Traceback" not in err: Lightning's seed message may hit a closed stream of an earlier test's capture)
    assert done.value.code == 2 and len(errors) == 1 and "ConfigError" not in err, err
    assert "FSDPStrategy" in errors[0] and "--trainer.strategy fsdp2" in errors[0]


def test_a_sharded_checkpoint_folder_is_a_valid_ckpt_path(tmp_path):
    from lightning_rlhf.cli import check_ckpt_path
    from lightning_rlhf.errors import ConfigError

    folder = tmp_path / "last.ckpt"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        check_ckpt_path(str(folder))
    (folder / "meta.pt").write_bytes(b"")
    check_ckpt_path(str(folder))


def test_fsdp2_is_a_registered_short_name():
    import lightning as L

    from lightning_rlhf.sharding import FSDP2Strategy

    trainer = L.Trainer(strategy="fsdp2", accelerator="cpu", devices=2, logger=False)
    assert isinstance(trainer.strategy, FSDP2Strategy)
    assert trainer.strategy._tensor_parallel_size == 1


def test_a_sharded_ppo_run_through_the_cli_exports_a_pipeline_model(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir,
                                                                      wordpiece_classifier_dir):
    """``lightning-rlhf fit --trainer.strategy fsdp2 --trainer.devices 2`` on CPU: two PPO
    iterations scored by a classifier with its own WordPiece tokenizer (it gets decoded text, as
    ``lvwerra/distilbert-imdb`` does for a non-GPT-2 policy), a sample table at every iteration
    (rank 0 generates, every rank gathers the weights: rank 0 alone would hang), a sharded
    checkpoint at step 2, and one export that ``transformers.pipeline`` loads."""
    import shutil

    import yaml
    from helpers import ppo_config
    from transformers import pipeline

    config = ppo_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, wordpiece_classifier_dir)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["max_steps"] = 2  # ppo_epochs 1, one mini-batch: one optimizer step per iteration
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "LIGHTNING_RLHF_DEBUG": "1",
           "PYTHONPATH": os.pathsep.join([str(SCRIPT.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([shutil.which("lightning-rlhf") or "lightning-rlhf", "fit", "--config", str(config),
                           "--trainer.strategy", "fsdp2", "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.is_dir() and (last / "meta.pt").is_file() and len(list(last.glob("*.distcp"))) == 2
    assert torch.load(last / "meta.pt", weights_only=False)["global_step"] == 2
    tables = read_events(tmp_path / "logs")[1]["samples/text_summary"]
    assert len(tables) == 2 and all(t.startswith("| prompt | response | reward |") for t in tables)
    generate = pipeline("text-generation", model=str(tmp_path / "export"), device="cpu")
    out = generate("the movie", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert out.startswith("the movie") and len(out) > len("the movie")
