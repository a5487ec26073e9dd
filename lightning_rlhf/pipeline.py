"""``lightning-rlhf-pipeline``: the whole job in one command, from a preset folder of configs.

``--preset offline`` (default) runs ``configs/offline/``: project tokenizer -> SFT -> reward
model (fit + test) -> PPO -> evaluation, on a CPU without the Hugging Face hub. ``--preset gpt2``
runs ``configs/gpt2/``: GPT-2 small SFT -> PPO against ``lvwerra/distilbert-imdb`` ->
evaluation, on a GPU with the hub. A preset is a folder with ``pipeline.yaml`` (the stage order)
and one ``lightning-rlhf fit`` config per stage; copy one to make your own (``--configs``).
Each stage prints a line when it starts and ends; ``<artifacts>/pipeline_summary.json`` keeps
the wall times and key figures, and the evaluation report is ``<artifacts>/eval/report.md``.

``--algo rloo`` runs the preset's ``rloo.yaml`` as the RL stage instead of ``ppo.yaml``;
``--algo ppo,rloo,grpo,dpo`` runs each and evaluates all their policies in one report; ``vbon``
and ``bond`` (Best-of-N distillation online, ``rl.reward_transforms``) sample their own
reference statistics, so they need nothing before them but SFT and the reward model. A DPO
stage first makes its preference pairs with ``lightning-rlhf-preferences`` (settings under
``preferences:`` in ``pipeline.yaml``, changed for a stage by a ``preferences-<stage>:`` block,
e.g. ``preferences-bonbon:`` for best-against-worst-of-8 pairs; into the stage's
``data.data_path``; finished shards are kept, so a rerun costs nothing).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lightning_rlhf.config_files import read_mapping, resolve_config
from lightning_rlhf.errors import (
    ArgumentParser,
    ConfigError,
    InputError,
    MissingInputError,
    UnreachableError,
    positive_int,
    run_console,
)
from lightning_rlhf.hub import hub_cached, hub_reachable, looks_like_local_path

LOCAL_DATA = "../shared/data/imdb"
HUB_DATA = "stanfordnlp/imdb"
PRESETS_ROOT = Path("configs")
SHIPPED_PRESETS = Path(__file__).resolve().parents[1] / "configs"  # the checkout of an editable install


def preset_folder(name: str) -> Path:
    """``--preset NAME``: ``configs/NAME`` of the working folder when it has one, else of the checkout
    this package was installed from (``pip install -e .``), so the command works from any folder. A
    regular (wheel) install ships no configs: copy a preset folder and pass ``--configs``."""
    local = PRESETS_ROOT / name
    if (local / "pipeline.yaml").exists() or not (SHIPPED_PRESETS / name / "pipeline.yaml").exists():
        return local
    return SHIPPED_PRESETS / name


def known_presets() -> list[str]:
    return sorted({d.name for root in (PRESETS_ROOT, SHIPPED_PRESETS) for d in root.glob("*")
                   if (d / "pipeline.yaml").exists()})


def _load_yaml(path: Path) -> dict:
    if not path.exists():
        raise MissingInputError(f"'{path}' does not exist; run from the repository root or pass --configs")
    return read_mapping(path, f"'{path}'", "fix it, or start from the file of the same name in configs/offline/")


def load_stage(path: Path) -> dict:
    """A stage's ``lightning-rlhf fit`` config with the configs its ``base:`` names under it
    (``config_files.resolve_config``): what the stage runs with, before the defaults."""
    return resolve_config(path, _load_yaml(path))


def _try_yaml(path: Path) -> dict:
    """A config of the preset folder, or {} for one that does not parse (listing choices only)."""
    try:
        return load_stage(path)
    except InputError:
        return {}


def check_plan(folder: Path, plan: dict, stages: list[str] | None = None) -> None:
    """``pipeline.yaml`` lists stages by name, and tests and evaluates only stages it has; with
    ``stages`` (those that run, once ``--algo`` has chosen the RL stages) also the evaluated ones."""
    where = f"'{folder / 'pipeline.yaml'}'"
    planned = plan.get("stages")
    if not isinstance(planned, list) or not planned or not all(isinstance(n, str) for n in planned):
        raise ConfigError(f"{where} needs `stages:`, a list of stage names (each <name>.yaml in {folder}), "
                          f"e.g. [sft, reward, ppo]")
    evaluate = plan.get("evaluate") or {}
    if not isinstance(evaluate, dict):
        raise ConfigError(f"{where}: evaluate must be a mapping such as {{policies: [sft, ppo], num_prompts: 512}}")
    for key, names, known in (("test", plan.get("test") or [], planned),
                              ("evaluate.policies", evaluate.get("policies") or [], stages)):
        if not isinstance(names, list):
            raise ConfigError(f"{where}: {key} must be a list of stage names, got {names!r}")
        unknown = [n for n in names if known is not None and n not in known]
        if unknown:
            raise ConfigError(f"{where}: {key} names {unknown[0]!r}, which is not one of its stages "
                              f"({', '.join(known)})")


def _init_args(config: dict) -> dict:
    return (config.get("model") or {}).get("init_args") or {}


def hub_ids(stages: dict[str, dict]) -> list[str]:
    """Model, tokenizer and data names of the stages that no earlier stage exports and no local
    path holds: what the run must fetch from the hub."""
    made, needed = set(), []
    for config in stages.values():
        init, data = _init_args(config), config.get("data") or {}
        names = [init.get(k) for k in ("model_name_or_path", "policy_name_or_path", "tokenizer_name_or_path",
                                       "ref_name_or_path", "reward_model")] + [data.get("tokenizer")]
        for name in names:
            if (isinstance(name, str) and name not in made and not os.path.exists(name)
                    and not looks_like_local_path(name) and name not in needed):
                needed.append(name)
        made.update(x for x in (init.get("export_dir"), (config.get("build_tokenizer") or {}).get("out")) if x)
    return needed


def check_hub(ids: list[str], preset: str) -> None:
    """Fail at once, naming the first id, when the hub is needed and unreachable."""
    if not ids or hub_reachable():
        return
    missing = [i for i in ids if not hub_cached(i)]
    if missing:
        raise UnreachableError(
            f"the {preset} preset needs '{missing[0]}' from the Hugging Face hub, which this machine cannot reach"
            f" (all it needs: {', '.join(missing)}); without the hub run the offline preset: "
            f"lightning-rlhf-pipeline --preset offline")


def _module(config: dict) -> str:
    return str((config.get("model") or {}).get("class_path", "")).rsplit(".", 1)[-1]


def _is_rl_stage(config: dict) -> bool:
    """A stage that optimises the policy against the reward: PPO and its siblings, or DPO."""
    return _module(config) in ("PPOModule", "DPOModule")


def choose_algorithms(folder: Path, stages: dict[str, dict], evaluate: dict, algo: str | None
                      ) -> tuple[dict[str, dict], dict]:
    """Replace the preset's RL stages by the ``--algo`` configs (comma-separated names of
    ``<folder>/<name>.yaml``) and evaluate each of them beside the non-RL policies."""
    if not algo:
        return stages, evaluate
    names = [a.strip() for a in algo.split(",") if a.strip()]
    if not names:
        raise ConfigError(f"--algo '{algo}' names no algorithm; give one or a comma list, e.g. --algo ppo,rloo")
    chosen = {}
    for name in names:
        config = load_stage(folder / f"{name}.yaml") if (folder / f"{name}.yaml").exists() else None
        if config is None or not _is_rl_stage(config):
            available = sorted(p.stem for p in folder.glob("*.yaml") if _is_rl_stage(_try_yaml(p)))
            raise MissingInputError(f"--algo {name}: '{folder / name}.yaml' is not an RL config of this preset; "
                                    f"choose from {', '.join(available) or 'none'}")
        chosen[name] = config
    kept = {n: c for n, c in stages.items() if not _is_rl_stage(c)}
    policies = [p for p in evaluate.get("policies", []) if p in kept] + list(chosen)
    return kept | chosen, {**evaluate, "policies": policies}


def pair_settings(folder: Path, plan: dict, name: str) -> dict:
    """``lightning-rlhf-preferences`` settings of the DPO-type stage ``name``: ``preferences:``
    updated by the stage's own ``preferences-<name>:`` block, when the plan has one."""
    own = plan.get(f"preferences-{name}") or {}
    if not isinstance(own, dict):
        raise ConfigError(f"'{folder / 'pipeline.yaml'}': preferences-{name} must be a mapping of "
                          f"lightning-rlhf-preferences settings, e.g. {{pairs: best_worst, samples_per_prompt: 8}}")
    return {**(plan.get("preferences") or {}), **own}


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _main(argv: list[str]) -> None:
    p = ArgumentParser(prog="lightning-rlhf-pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="offline", help="a folder under configs/: offline (CPU), quick (a five-minute "
                                                       "smoke run of every stage) or gpt2 (GPU, hub)")
    p.add_argument("--configs", help="a preset folder of your own (instead of configs/<preset>)")
    p.add_argument("--data", help=f"IMDB source; default {LOCAL_DATA} when it exists, else {HUB_DATA}")
    p.add_argument("--num-prompts", type=positive_int,
                   help="held-out prompts for the evaluation (default: the preset's)")
    p.add_argument("--skip-existing", action="store_true", help="skip stages whose export already exists")
    p.add_argument("--algo", help="RL stage(s) to run instead of the preset's: ppo, rloo, grpo, dpo, bonbon, "
                                  "vbon, bond, rloo-fixed-beta, or a comma list")
    args = p.parse_args(argv)

    folder = Path(args.configs) if args.configs else preset_folder(args.preset)
    if not (folder / "pipeline.yaml").exists():
        known = known_presets()
        raise MissingInputError(f"no preset at '{folder}' (no pipeline.yaml there); presets: "
                                f"{', '.join(known) or 'none found: run from the repository root'}")
    plan = _load_yaml(folder / "pipeline.yaml")
    check_plan(folder, plan)  # the evaluated policies are checked once --algo has chosen the stages
    stages = {name: load_stage(folder / f"{name}.yaml") for name in plan["stages"]}
    stages, evaluate = choose_algorithms(folder, stages, plan.get("evaluate") or {}, args.algo)
    check_plan(folder, {**plan, "evaluate": evaluate}, list(stages))
    if not any(_init_args(c).get("export_dir") for c in stages.values()):
        raise ConfigError(f"no stage of '{folder}' sets model.init_args.export_dir, so the pipeline has no "
                          f"artifacts folder; set it in each stage config (see configs/offline/)")
    if args.data and looks_like_local_path(args.data) and not Path(args.data).expanduser().exists():
        raise MissingInputError(f"--data '{args.data}' does not exist; give a folder of train/test "
                                f".parquet/.jsonl/.csv files, an extracted aclImdb/ folder, or a hub id such as "
                                f"{HUB_DATA}")
    data = args.data or (LOCAL_DATA if Path(LOCAL_DATA).exists() else HUB_DATA)
    where = "local copy" if Path(data).exists() else "Hugging Face hub"
    print(f"preset: {folder}; stages: {' -> '.join([*stages, 'eval'])}; data: {data} ({where})", flush=True)
    pairs_rewards = [pair_settings(folder, plan, n).get("reward_model") for n, c in stages.items()
                     if _module(c) == "DPOModule"]
    extra = [r for r in dict.fromkeys(pairs_rewards)
             if r and not Path(r).exists() and not looks_like_local_path(r)]
    check_hub(hub_ids(stages) + extra + ([] if Path(data).exists() else [data]), folder.name)

    exports = {name: _init_args(c).get("export_dir") for name, c in stages.items()}
    out = Path(next(e for e in exports.values() if e)).parent
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}

    def run_stage(name: str, export: str | None, fn) -> None:
        if args.skip_existing and export and Path(export).exists():
            print(f"== {name}: {export} exists, skipped", flush=True)
            return
        print(f"== {name}: started", flush=True)
        start = time.perf_counter()
        try:
            figures = fn() or {}
        except SystemExit:  # SIGTERM or Ctrl-C: the stage's InterruptCheckpoint has saved
            wall = time.perf_counter() - start
            summary[name] = {"wall_s": round(wall, 1), "interrupted": True}
            (out / "pipeline_summary.json").write_text(json.dumps(summary, indent=2))
            print(f"== {name}: interrupted after {_minutes(wall)}; the stages before it are kept (--skip-existing "
                  f"skips those with an export)", flush=True)
            raise
        wall = time.perf_counter() - start
        summary[name] = {"wall_s": round(wall, 1), **figures}
        (out / "pipeline_summary.json").write_text(json.dumps(summary, indent=2))
        shown = ", ".join(f"{k} {v:.3g}" for k, v in figures.items() if isinstance(v, float))
        print(f"== {name}: done in {_minutes(wall)}" + (f" ({shown})" if shown else ""), flush=True)

    from lightning_rlhf.cli import build_cli

    def fit(name: str) -> dict:
        reviews = (stages[name].get("data") or {}).get("shape") != "preferences"  # pairs stay where they were made
        source = ["--data.data_path", data] if reviews else []
        cli = build_cli(["fit", "--config", str(folder / f"{name}.yaml"), *source])
        return {k: float(v) for k, v in cli.trainer.callback_metrics.items()
                if k.startswith(("val/", "reward/score", "objective/kl"))}

    def test(name: str) -> dict:
        cli = build_cli(["test", "--config", str(folder / f"{name}.yaml"), "--data.data_path", data,
                         "--model.init_args.model_name_or_path", exports[name],
                         "--model.init_args.model_config", "null"])
        return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}

    def preferences(name: str) -> dict:
        settings = pair_settings(folder, plan, name)
        if not settings.get("policy") or not (settings.get("reward_model") or settings.get("reward_fn")):
            raise ConfigError(f"'{folder / 'pipeline.yaml'}' needs a preferences: block with policy and reward_model "
                              f"(or reward_fn) for the {name} stage")
        from lightning_rlhf.preference_pairs import main as preferences_main

        flags = [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))]
        preferences_main([*flags, "--data", data, "--out", str((stages[name].get("data") or {})["data_path"])])

    for name in stages:
        if _module(stages[name]) == "DPOModule" and not (args.skip_existing and Path(exports[name]).exists()):
            run_stage(f"{name}_pairs", None, lambda n=name: preferences(n))
        run_stage(name, exports[name], lambda n=name: fit(n))
        if name in plan.get("test", []):
            run_stage(f"{name}_test", None, lambda n=name: test(n))
    if evaluate.get("policies"):
        run_stage("eval", None, lambda: _evaluate(stages, exports, evaluate, data, out, args.num_prompts,
                                                  plan.get("preferences") or {}))
    width = max(len(k) for k in summary) if summary else 5
    if evaluate.get("title"):
        print(f"\n{evaluate['title']}")
    print("\nstage".ljust(width + 3) + "wall time   figures")
    for name, row in summary.items():
        figures = ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k != "wall_s" and isinstance(v, float))
        print(f"{name.ljust(width + 2)}{_minutes(row['wall_s']):<12}{figures}")
    print(f"summary: {out / 'pipeline_summary.json'}; report: {out / 'eval' / 'report.md'}", flush=True)


def _evaluate(stages: dict[str, dict], exports: dict[str, str], evaluate: dict, data: str, out: Path,
              num_prompts: int | None, preferences: dict) -> dict:
    """``lightning-rlhf-eval`` of the listed stages' exports; the reward and sampling settings come
    from the last stage that scores with a reward (else the preference settings), the reference is
    the first policy. Returns each policy's held-out mean reward and KL for the summary."""
    from lightning_rlhf.evaluation.cli import main as eval_main

    names = evaluate["policies"]
    scored = [n for n in names if _init_args(stages[n]).get("reward_model") or _init_args(stages[n]).get("reward_fn")]
    rl = _init_args(stages[scored[-1]]) if scored else {
        "reward_model": preferences.get("reward_model"), "reward_fn": preferences.get("reward_fn"),
        "response_max_tokens": preferences.get("max_new_tokens", 24),
        "temperature": preferences.get("temperature", 0.7)}
    reward = (["--reward-model", rl["reward_model"]] if rl.get("reward_model")
              else ["--reward-fn", rl["reward_fn"]])
    curve = scored[-1] if scored else None  # the reward curve of an RL run that logs one
    logs = curve and _latest_version(Path(((stages[curve].get("trainer") or {}).get("logger") or {})
                                          .get("init_args", {}).get("save_dir", "lightning_logs")) / curve)
    eval_main([*(a for n in names for a in ("--policy", f"{n}={exports[n]}")), "--reference", exports[names[0]],
               *reward, "--data", data, "--num-prompts", str(num_prompts or evaluate.get("num_prompts", 512)),
               "--max-new-tokens", str(rl.get("response_max_tokens", 24)),
               "--temperature", str(rl.get("temperature", 0.7)), "--out", str(out / "eval"),
               *(["--stop-at-eos"] if rl.get("stop_at_eos") else []),
               *(["--run-logdir", logs] if logs else []),
               *(["--title", str(evaluate["title"])] if evaluate.get("title") else [])])
    policies = json.loads((out / "eval" / "metrics.json").read_text())["policies"]
    return {f"{name}/{key}": float(figures[key]) for name, figures in policies.items()
            for key in ("reward_mean", "kl_to_reference") if figures.get(key) is not None}


def _latest_version(log_root: Path) -> str | None:
    versions = sorted(log_root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return str(versions[-1]) if versions else None


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lightning-rlhf-pipeline``; a SIGTERM-ed stage ends the run with status 143."""
    run_console(_main, "lightning-rlhf-pipeline", argv)


if __name__ == "__main__":
    main()
