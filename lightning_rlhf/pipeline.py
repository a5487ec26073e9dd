"""``lightning-rlhf-pipeline``: the whole offline showcase in one command, from the repo root.

tokenizer -> SFT -> reward model (fit + test) -> PPO against that reward model -> evaluation
of the SFT and PPO policies on held-out prompts. Each stage's wall time and key figures go to
``<out>/pipeline_summary.json``; the evaluation report is ``<out>/eval/report.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lightning_rlhf.cli import build_cli
from lightning_rlhf.evaluation.cli import main as eval_main
from lightning_rlhf.tokenizer_training import main as tokenizer_main

OUT = Path("artifacts/offline")  # where configs/offline/*.yaml export and log


def _latest_version(log_root: Path) -> str | None:
    versions = sorted(log_root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return str(versions[-1]) if versions else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="configs/offline", help="folder with sft/reward/ppo.yaml")
    p.add_argument("--data", default="../shared/data/imdb", help="IMDB source of the configs")
    p.add_argument("--num-prompts", type=int, default=512, help="held-out prompts for the evaluation")
    p.add_argument("--skip-existing", action="store_true", help="skip stages whose export exists")
    args = p.parse_args(argv)
    configs, out = Path(args.configs), OUT
    if not Path(args.data).exists():
        raise SystemExit(f"data '{args.data}' does not exist; pass --data (run from the repository root)")
    summary: dict[str, dict] = {}

    def stage(name: str, export: Path | None, fn) -> None:
        if args.skip_existing and export is not None and export.exists():
            print(f"== {name}: {export} exists, skipped")
            return
        print(f"== {name}")
        start = time.perf_counter()
        figures = fn() or {}
        summary[name] = {"wall_s": round(time.perf_counter() - start, 1), **figures}
        (out / "pipeline_summary.json").write_text(json.dumps(summary, indent=2))

    def fit(config: str) -> dict:
        cli = build_cli(["fit", "--config", str(configs / config), "--data.data_path", args.data])
        return {k: float(v) for k, v in cli.trainer.callback_metrics.items()
                if k.startswith(("val/", "reward/score", "objective/kl"))}

    def test_reward() -> dict:
        cli = build_cli(["test", "--config", str(configs / "reward.yaml"), "--data.data_path", args.data,
                         "--model.init_args.model_name_or_path", str(out / "reward"),
                         "--model.init_args.model_config", "null"])
        return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}

    out.mkdir(parents=True, exist_ok=True)
    stage("tokenizer", out / "tokenizer", lambda: tokenizer_main(
        ["--data", args.data, "--out", str(out / "tokenizer")]))
    stage("sft", out / "sft", lambda: fit("sft.yaml"))
    stage("reward", out / "reward", lambda: fit("reward.yaml"))
    stage("reward_test", None, test_reward)
    stage("ppo", out / "ppo", lambda: fit("ppo.yaml"))
    run_logdir = _latest_version(out / "logs" / "ppo")
    stage("eval", None, lambda: eval_main(
        ["--policy", f"sft={out / 'sft'}", "--policy", f"ppo={out / 'ppo'}", "--reference", str(out / "sft"),
         "--reward-model", str(out / "reward"), "--data", args.data, "--num-prompts", str(args.num_prompts),
         "--max-new-tokens", "24", "--out", str(out / "eval")]
        + (["--run-logdir", run_logdir] if run_logdir else [])))
    print(json.dumps(summary, indent=2))
    print(f"report: {out / 'eval' / 'report.md'}")


if __name__ == "__main__":
    main()
