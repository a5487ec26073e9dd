"""Two-process CPU DDP: sharded prompts, per-rank seeds, global statistics, identical weights."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tb_events import read_events


@pytest.mark.parametrize("estimator, k", [("gae", 1), ("reinforce_pp_baseline", 2)])
def test_ppo_ddp_two_processes(tmp_path, tokenizer_dir, imdb_dir, estimator, k):
    """PPO, and a critic-free estimator whose groups stay on their rank and whose whitening is global."""
    script = Path(__file__).with_name("ddp_ppo_run.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path), tokenizer_dir, imdb_dir, estimator, str(k)],
                          capture_output=True, text=True, timeout=600, cwd=script.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1))

    assert not set(r0["indices"]) & set(r1["indices"]), "each rank reads its own shard of prompts"
    assert r0["generator_seed"] != r1["generator_seed"], "each rank samples with its own seed"
    assert len(r0["steps"]) == len(r1["steps"]) == 3
    for s0, s1 in zip(r0["steps"], r1["steps"], strict=True):
        assert s0["prompts"] != s1["prompts"]
        assert s0["checksum"] == s1["checksum"], "weights are identical on both ranks after each step"
        assert s0["kl_coef"] == s1["kl_coef"]
        assert s0["kl_fed"] == s1["kl_fed"], "the adaptive KL update uses the global KL"
        assert math.isclose(s0["kl_fed"], (s0["local_kl"] + s1["local_kl"]) / 2, rel_tol=1e-5, abs_tol=1e-9)
        assert s0["logged_score"] == s1["logged_score"], "logged metrics are synced"
        assert math.isclose(s0["logged_score"], (s0["local_score"] + s1["local_score"]) / 2, rel_tol=1e-5)
        assert s0["group_ids"] and s1["group_ids"], "the k samples of a prompt are consecutive rows on its rank"
        total, total_sq, count = (a + b for a, b in zip(s0["adv"], s1["adv"], strict=True))
        assert abs(total / count) < 1e-5 and abs(total_sq / count - 1) < 0.05, "whitening is global"
    assert any(abs(s["adv"][0] / s["adv"][2]) > 1e-3 for s in r0["steps"] + r1["steps"]), \
        "per-rank means differ from 0, so the statistics were not per-rank"
    assert r0["steps"][-1]["kl_coef"] != 0.2, "the KL coefficient adapted"

    assert (r0["value_params"] > 0) == (estimator == "gae"), "a value head only for GAE"
    assert (r0["exports"], r1["exports"]) == (1, 0), "only rank 0 exports"
    assert (tmp_path / "export" / "model.safetensors").exists()
    events = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert len(events) == 1, "only rank 0 writes TensorBoard events"
    _, texts = read_events(tmp_path / "logs")
    assert len(texts["samples/text_summary"]) == 3


def test_dynamic_sampling_ddp_ranks_agree_on_what_was_dropped(tmp_path, tokenizer_dir, imdb_dir):
    """GRPO with dynamic sampling on 2 processes: each rank drops and refills its own groups, the
    logged count is the sum of both ranks' own counts (the same on both), every batch keeps its
    rows on both ranks, and the weights stay identical."""
    script = Path(__file__).with_name("ddp_ppo_run.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path), tokenizer_dir, imdb_dir, "grpo", "2",
                           "dynamic"], capture_output=True, text=True, timeout=600, cwd=script.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1))
    for s0, s1 in zip(r0["steps"], r1["steps"], strict=True):
        assert s0["checksum"] == s1["checksum"]
        assert s0["rows"] == s1["rows"] == 4 * 2
        assert s0["logged_zero_std"] == s1["logged_zero_std"] == s0["local_zero_std"] + s1["local_zero_std"]
    assert any(s["local_zero_std"] for s in r0["steps"] + r1["steps"]), "some groups were dropped"


@pytest.mark.parametrize("mode", ["ppo", "critic_free", "jbond"], ids=["ppo", "dr_grpo_kl_loss", "jbond"])
def test_two_processes_on_two_halves_make_the_one_process_update(tmp_path, tokenizer_dir, imdb_dir, mode):
    """Responses of 4-16 tokens split unevenly between the ranks; token counts are global. The
    critic-free case: Dr. GRPO's constant divisor and a k3 KL loss, no value head. J-BOND: the
    forward term's NLL of demos of 2-12 tokens beside the policy loss, and the EMA anchor. With PPO the
    2-process run is also micro-batched (2 micro-batches of 2 rows per rank): the same update,
    and gradients all-reduced once per mini-batch, not once per micro-batch."""
    script = Path(__file__).with_name("ddp_update_run.py")
    runs = {"one": (1, None), "two": (2, None)} | ({"two_micro": (2, 2)} if mode == "ppo" else {})
    updates, allreduces = {}, {}
    for name, (devices, micro) in runs.items():
        out = tmp_path / f"update_{name}.pt"
        done = subprocess.run([sys.executable, str(script), str(out), tokenizer_dir, imdb_dir, str(devices),
                               mode] + ([str(micro)] if micro else []),
                              capture_output=True, text=True, timeout=600, cwd=script.parent)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        updates[name] = torch.load(out)
        if devices > 1:
            allreduces[name] = [int((tmp_path / f"update_{name}.pt.rank{k}.allreduces").read_text()) for k in (0, 1)]
    assert updates["one"].norm() > 0
    for name in runs.keys() - {"one"}:
        assert ((updates["one"] - updates[name]).norm() / updates["one"].norm()).item() <= 1e-5, name
    assert allreduces["two"][0] == allreduces["two"][1] > 0
    if mode == "ppo":
        assert allreduces["two_micro"] == allreduces["two"], "micro-batches accumulate locally (no_sync)"


def test_dpo_two_processes_step_with_the_one_process_gradient(tmp_path, tokenizer_dir):
    """4 pairs on each of 2 ranks average to the gradient of the 8 pairs on one process; the
    ranks end with the same weights and only rank 0 exports."""
    from helpers import write_jsonl

    rows = [{"prompt": f"the movie {i}", "chosen": " was great" + " and good" * (i % 3),
             "rejected": " was awful" + " and dull" * (i % 4)} for i in range(24)]
    pairs = str(write_jsonl(tmp_path / "pairs" / "train.jsonl", rows).parent)
    script = Path(__file__).with_name("ddp_dpo_run.py")
    grads = {}
    for devices in (1, 2):
        out = tmp_path / f"dpo{devices}.pt"
        done = subprocess.run([sys.executable, str(script), str(out), tokenizer_dir, pairs, str(devices)],
                              capture_output=True, text=True, timeout=600, cwd=script.parent)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        grads[devices] = torch.load(out)
    assert grads[1].norm() > 0
    assert ((grads[1] - grads[2]).norm() / grads[1].norm()).item() <= 1e-5
    r0, r1 = (json.loads((tmp_path / f"dpo2.pt.rank{k}.json").read_text()) for k in (0, 1))
    assert r0["checksum"] == r1["checksum"]
    assert (tmp_path / "dpo2.pt.export" / "model.safetensors").exists()
