"""Run the frontier sweep: train every run with policy snapshots, evaluate every snapshot and
Best-of-N on the same held-out prompts, and cache each result so that a re-run (or a killed
sweep started again) only does what is missing.

Layout under ``out/``::

    prompts.json                      the held-out prompts every point is evaluated on
    points/sft.json                   the reference itself (KL 0)
    points/best-of-n-seed<S>.json     Best-of-N for every n, one candidate set per seed (KL estimate and bound)
    runs/<method>-seed<S>/            the run's checkpoints, logs, snapshots/step-<k>/ (steps from
                                      callbacks.snapshots.snapshot_steps) and export/
    runs/<method>-seed<S>/done.json   written when the fit finished
    points/<method>-seed<S>.json      its snapshots' figures, step by step
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_rlhf.config_files import resolve_config
from lightning_rlhf.evaluation.best_of_n import best_of_n
from lightning_rlhf.evaluation.evaluate import evaluate_policy, held_out_prompts, load_judge
from lightning_rlhf.export import write_text_atomic
from lightning_rlhf.frontier.plan import FrontierSettings, Run
from lightning_rlhf.models.loading import load_causal_lm
from lightning_rlhf.rewards import SentimentClassifierReward


def write_json(path: Path, data: Any) -> None:
    """Atomically, so a killed sweep never leaves half a result."""
    write_text_atomic(path, json.dumps(data, indent=2))


def _read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def fit_args(run: Run, settings: FrontierSettings, run_dir: Path) -> list[str]:
    """``lightning-rlhf fit`` arguments of one run: its config, overrides, seed, and every output
    inside ``run_dir`` (checkpoints at a fixed place, so a killed run resumes from ``last.ckpt``)."""
    config = resolve_config(run.config, _read_yaml(run.config))  # with the configs its base: names
    module = str((config.get("model") or {}).get("class_path", ""))
    reviews = (config.get("data") or {}).get("shape") != "preferences"
    args = {"seed_everything": run.seed, "data.seed": run.seed,
            **({"model.init_args.sampling_seed": run.seed} if module.endswith("PPOModule") else {}),
            **({"data.data_path": settings.data} if reviews else {}),
            "model.init_args.export_dir": run_dir / "export", "trainer.default_root_dir": run_dir,
            "trainer.logger.init_args.save_dir": run_dir / "logs", "checkpoint.dirpath": run_dir / "checkpoints",
            "trainer.accelerator": settings.device, **run.args}
    flat = ["fit", "--config", str(run.config)]
    for key, value in args.items():
        flat += [f"--{key}", "null" if value is None else str(value)]
    flat += ["--trainer.callbacks+=lightning_rlhf.callbacks.PolicySnapshots",
             f"--trainer.callbacks.dirpath={run_dir / 'snapshots'}",
             f"--trainer.callbacks.num_snapshots={settings.snapshots}"]
    last = run_dir / "checkpoints" / "last.ckpt"
    return flat + (["--ckpt_path", str(last)] if last.exists() else [])


class Sweep:
    """Carries out a ``FrontierSettings``; every step is skipped when its result exists."""

    def __init__(self, settings: FrontierSettings, log=print) -> None:
        self.s = settings
        self.out = Path(settings.out)
        self.log = log
        self.device = torch.device("cuda" if settings.device == "gpu" else settings.device)
        self._models: dict[str, Any] = {}

    # -- shared inputs --------------------------------------------------------------------
    def prompts(self) -> list[str]:
        path = self.out / "prompts.json"
        if path.exists():
            return json.loads(path.read_text())
        prompts = held_out_prompts(self.s.data, self.s.reference, self.s.num_prompts, self.s.eval_seed, 2, 8)
        write_json(path, prompts)
        return prompts

    def _reward(self) -> SentimentClassifierReward:
        if "reward" not in self._models:
            self._models["reward"] = SentimentClassifierReward(self.s.reward_model, self.s.positive_label).to(
                self.device)
        return self._models["reward"]

    def _judge(self) -> SentimentClassifierReward | None:
        if "judge" not in self._models:
            judge = load_judge(self.s.judge, self.s.positive_label)
            self._models["judge"] = judge.to(self.device) if judge is not None else None
        return self._models["judge"]

    def _reference(self) -> torch.nn.Module:
        if "reference" not in self._models:
            self._models["reference"] = load_causal_lm(self.s.reference).to(self.device).eval()
        return self._models["reference"]

    # -- points ---------------------------------------------------------------------------
    def evaluate(self, name: str, path: str) -> dict:
        """Figures of the policy at ``path`` on the held-out prompts (``evaluate_policy``)."""
        s = self.s
        result = evaluate_policy(name, path, self._reference(), self._reward(), self.prompts(), s.max_new_tokens,
                                 s.temperature, s.batch_size, s.eval_seed, s.stop_at_eos, self.device, self._judge(),
                                 s.compile_generation)
        return result.figures

    def reference_point(self) -> dict:
        path = self.out / "points" / "sft.json"
        if not path.exists():
            figures = self.evaluate("sft", self.s.reference)
            write_json(path, {"method": "sft", "seed": None, "points": [{"step": 0, **figures}]})
        return json.loads(path.read_text())

    def best_of_n_points(self, seed: int) -> dict:
        """Best-of-N for every n from one candidate set; a cached file from before the KL
        estimate (points without ``kl_estimate``) is computed again."""
        path = self.out / "points" / f"best-of-n-seed{seed}.json"
        stale = path.exists() and any("kl_estimate" not in p for p in json.loads(path.read_text())["points"])
        if stale:
            self.log(f"best-of-n seed {seed}: cached points predate the KL estimate; sampling them again")
        if stale or not path.exists():
            s = self.s
            start = time.perf_counter()
            results = best_of_n(s.reference, self._reward(), self.prompts(), s.best_of_n, s.max_new_tokens,
                                s.temperature, s.batch_size, seed, s.stop_at_eos, self.device, self._judge(),
                                s.compile_generation)
            points = [{**r.figures, "best_of": int(r.name.rsplit("-", 1)[1])} for r in results]
            write_json(path, {"method": "best-of-n", "seed": seed, "wall_s": round(time.perf_counter() - start, 1),
                              "points": points})
            self.log(f"best-of-n seed {seed}: {len(points)} points in {time.perf_counter() - start:.0f} s")
        return json.loads(path.read_text())

    # -- runs -----------------------------------------------------------------------------
    def train(self, run: Run) -> dict:
        """Fit the run unless ``done.json`` says it finished; resumes from ``last.ckpt``."""
        from lightning_rlhf.cli import build_cli

        run_dir = self.out / "runs" / run.name
        done = run_dir / "done.json"
        if done.exists():
            return json.loads(done.read_text())
        args = fit_args(run, self.s, run_dir)
        resumed = "--ckpt_path" in args
        self.log(f"== {run.name}: {'resuming' if resumed else 'training'} ({run.config})")
        start = time.perf_counter()
        build_cli(args)
        info = {"run": run.name, "config": str(run.config), "args": run.args, "seed": run.seed,
                "wall_s": round(time.perf_counter() - start, 1), "resumed": resumed}
        write_json(done, info)
        return info

    def run_points(self, run: Run) -> dict:
        """Train the run, then evaluate each snapshot not evaluated yet."""
        info = self.train(run)
        path = self.out / "points" / f"{run.name}.json"
        cached = json.loads(path.read_text()) if path.exists() else {"points": []}
        seen = {p["step"] for p in cached["points"]}
        snapshots = sorted((int(p.name[5:]), p) for p in (self.out / "runs" / run.name / "snapshots").glob("step-*")
                           if p.name[5:].isdigit())
        points = list(cached["points"])
        for step, snap in snapshots:
            if step in seen:
                continue
            points.append({"step": step, **self.evaluate(f"{run.name}@{step}", str(snap))})
            points.sort(key=lambda p: p["step"])
            write_json(path, {"method": run.method, "seed": run.seed, "config": str(run.config), "args": run.args,
                              "train_wall_s": info["wall_s"], "points": points})
        if not path.exists():
            raise RuntimeError(f"run {run.name} finished without snapshots in {self.out / 'runs' / run.name}")
        return json.loads(path.read_text())

    def all_points(self) -> list[dict]:
        """Every result of the sweep, computing what is missing: reference, Best-of-N, runs."""
        results = [self.reference_point()]
        if self.s.best_of_n:
            results += [self.best_of_n_points(seed) for seed in self.s.seeds]
        results += [self.run_points(run) for run in self.s.runs()]
        return results

    def finished_points(self) -> list[dict]:
        """The results already on disk, in sweep order, computing nothing."""
        names = ["sft", *(f"best-of-n-seed{seed}" for seed in self.s.seeds), *(r.name for r in self.s.runs())]
        paths = [self.out / "points" / f"{name}.json" for name in names]
        return [json.loads(p.read_text()) for p in paths if p.exists()]
