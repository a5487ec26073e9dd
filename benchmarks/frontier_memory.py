"""Resident memory of the frontier's evaluation phase as it goes through many policy snapshots.

The frontier evaluates every snapshot of every run in one process (``Sweep.evaluate``: load the policy, sample
with the compiled decode step, score it, drop it). A decoder cache that keeps its model alive makes the memory grow
by one policy per snapshot; a sampler that owns its decoders (``generation.Sampler``) keeps it flat. This loads a
random-init GPT-2 of the given size ``--loads`` times (each a fresh model object, as snapshots are) with the
reward model, judge, data and sampling settings of a frontier YAML, and prints VmRSS after each and VmHWM (the
peak), in MiB, then a JSON line. Linux only (``/proc/self/status``). Run it from the repository root, or with
``PYTHONPATH`` pointing at another tree to compare commits:

    python benchmarks/frontier_memory.py --config configs/offline/frontier.yaml --n-layer 10 --n-embd 768
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lightning_rlhf.frontier.plan import load_settings
from lightning_rlhf.frontier.sweep import Sweep


def memory_mib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in MiB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) // 1024, int(status["VmHWM"].split()[0]) // 1024


def build_policy(reference: str, folder: Path, n_layer: int, n_embd: int) -> int:
    """Save a random-init causal LM shaped like ``reference`` but with ``n_layer`` x ``n_embd`` (its tokenizer
    files copied) to ``folder``; returns its parameter count."""
    config = AutoConfig.from_pretrained(reference)
    config.update({"n_layer": n_layer, "n_embd": n_embd, "n_head": max(1, n_embd // 64)})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    for file in Path(reference).iterdir():
        if file.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copy(file, folder / file.name)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/offline/frontier.yaml", help="frontier YAML (reward, judge, data)")
    p.add_argument("--loads", type=int, default=11, help="snapshots to evaluate, one after the other")
    p.add_argument("--n-layer", type=int, default=10)
    p.add_argument("--n-embd", type=int, default=768)
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy"
        frontier = load_settings(args.config)
        n_params = build_policy(frontier.reference, policy, args.n_layer, args.n_embd)
        settings = replace(frontier, reference=str(policy), out=str(Path(tmp) / "out"),
                           num_prompts=args.num_prompts, compile_generation=True)
        sweep = Sweep(settings, log=lambda *a: None)
        start = memory_mib()
        print(f"policy {n_params / 1e6:.1f} M parameters; start: rss {start[0]} MiB", flush=True)
        rss, peak = [], []
        for i in range(1, args.loads + 1):
            t = time.perf_counter()
            sweep.evaluate(f"snapshot{i}", str(policy))
            gc.collect()
            now, high = memory_mib()
            rss.append(now)
            peak.append(high)
            print(f"after {i:2d} snapshots: rss {now} MiB, peak {high} MiB ({time.perf_counter() - t:.0f} s)",
                  flush=True)
    growth = (peak[-1] - peak[0]) / max(1, len(peak) - 1)
    print(json.dumps({"params_m": round(n_params / 1e6, 1), "loads": args.loads, "rss_mib": rss, "peak_mib": peak,
                      "peak_growth_mib_per_snapshot": round(growth, 1)}))


if __name__ == "__main__":
    main()
