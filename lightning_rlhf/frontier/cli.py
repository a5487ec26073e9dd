"""``lightning-rlhf-frontier``: reward against KL for every method, over seeds, with Best-of-N and a
gold judge. Re-running it skips everything already computed; a killed sweep resumes."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from lightning_rlhf.config_files import resolve_config
from lightning_rlhf.errors import ArgumentParser, ConfigError, MissingInputError, check_output_folder, run_console
from lightning_rlhf.export import made_by
from lightning_rlhf.frontier.plan import FrontierSettings, load_settings, read_yaml_mapping
from lightning_rlhf.frontier.report import write_frontier
from lightning_rlhf.frontier.sweep import Sweep
from lightning_rlhf.hub import looks_like_local_path
from lightning_rlhf.pipeline import check_hub


def check_inputs(settings: FrontierSettings) -> None:
    """Every local input exists (else name the command that makes it); hub ids are reachable."""
    hub = []
    inputs = [(settings.reference, "reference (SFT) export"), (settings.reward_model, "reward model"),
              (settings.judge, "gold judge"), (settings.data, "data")]
    for run in settings.runs():
        own = read_yaml_mapping(run.config, f"{run.method}'s fit config", "configs/offline/ppo.yaml")
        data = resolve_config(run.config, own).get("data") or {}
        if data.get("shape") == "preferences":
            pairs = str(run.args.get("data.data_path", data.get("data_path")))
            inputs.append((pairs, f"{run.method}'s preference pairs"))
    for path, what in inputs:
        if path is not None and Path(path).is_file() and what != "data" and "preference" not in what:
            raise ConfigError(f"{what} '{path}' is a file; it must be a folder written by `save_pretrained` (a "
                              f"stage's export_dir) or a hub id")
        if path is None or Path(path).exists():
            continue
        if not looks_like_local_path(path):
            hub.append(path)
            continue
        command = made_by(path)
        hint = (f"it is the export of `{command}`" if command else
                "make them with lightning-rlhf-preferences (or lightning-rlhf-pipeline --algo dpo)"
                if "preference" in what else "train or download it first")
        raise MissingInputError(f"{what} '{path}' does not exist: {hint}")
    check_hub(list(dict.fromkeys(hub)), "frontier")


def _main(argv: list[str]) -> None:
    p = ArgumentParser(prog="lightning-rlhf-frontier", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/offline/frontier.yaml", help="sweep settings (YAML)")
    p.add_argument("--out", help="output folder (default: the YAML's out)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 8 prompts, first seed, runs of 4 optimizer steps, best-of-4")
    p.add_argument("--report-only", action="store_true", help="write the report from the finished points only")
    args = p.parse_args(argv)

    settings = load_settings(args.config)
    if args.out:
        settings = dataclasses.replace(settings, out=args.out)
    if args.quick:
        settings = settings.quick()
    check_output_folder(settings.out, "--out" if args.out else f"out (in {args.config})")
    if not args.report_only:
        check_inputs(settings)
    runs = settings.runs()
    print(f"frontier: {len(runs)} runs ({', '.join(settings.methods)} x seeds {settings.seeds}), "
          f"best-of-n {settings.best_of_n}, {settings.num_prompts} prompts -> {settings.out}", flush=True)
    start = time.perf_counter()
    sweep = Sweep(settings, log=lambda line: print(line, flush=True))
    results = sweep.finished_points() if args.report_only else sweep.all_points()
    wall = time.perf_counter() - start
    record = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()}
    previous = Path(settings.out) / "frontier.json"
    if args.report_only:  # keep the wall time of the sweep that computed the points
        wall = json.loads(previous.read_text()).get("wall_s") if previous.exists() else None
    data = write_frontier(results, settings.out, record, wall)
    for b in data["best_within_2_nats"]:
        print(f"best within 2 nats: {b['method']} at point {b['point']}: reward {b['reward_mean']:.3f}, "
              f"KL {b['kl']:.2f}", flush=True)
    print(f"wrote {Path(settings.out) / 'frontier.md'} (and .json, .csv, .png) in "
          f"{(time.perf_counter() - start) / 60:.1f} min", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lightning-rlhf-frontier``; input errors end as one ``error:`` line."""
    run_console(_main, "lightning-rlhf-frontier", argv)


if __name__ == "__main__":
    main()
