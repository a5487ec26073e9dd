"""``lightning-rlhf-eval``: compare exported policies on held-out IMDB prompts."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lightning_rlhf.errors import (
    ArgumentParser,
    MissingInputError,
    check_output_folder,
    device_arg,
    positive_float,
    positive_int,
    run_console,
)
from lightning_rlhf.evaluation.evaluate import evaluate_policies, held_out_prompts, load_judge
from lightning_rlhf.evaluation.report import write_report
from lightning_rlhf.models.loading import check_model_input
from lightning_rlhf.rewards import build_reward


def _policy(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--policy takes NAME=FOLDER, got '{spec}'")
    return name, path


def check_inputs(args: argparse.Namespace) -> None:
    """Every local input exists and --out can be written, before any model loads."""
    for name, path in args.policy:
        check_model_input(path, f"--policy {name}")
    check_model_input(args.reference, "--reference")
    check_model_input(args.reward_model, "--reward-model")
    check_model_input(args.judge, "--judge")
    if args.run_logdir is not None and not Path(args.run_logdir).expanduser().is_dir():
        raise MissingInputError(f"--run-logdir '{args.run_logdir}' is not a folder; give the TensorBoard log "
                                f"folder of the RL run (e.g. artifacts/offline/logs/ppo/version_0), or leave it out")
    check_output_folder(args.out, "--out")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lightning-rlhf-eval``; input errors end as one ``error:`` line."""
    run_console(_main, "lightning-rlhf-eval", argv)


def _main(argv: list[str]) -> None:
    p = ArgumentParser(prog="lightning-rlhf-eval", description=__doc__.splitlines()[0])
    p.add_argument("--policy", type=_policy, action="append", required=True,
                   help="NAME=FOLDER of a save_pretrained causal LM; repeat to compare")
    p.add_argument("--reference", required=True, help="reference model for KL and perplexity (the SFT model)")
    p.add_argument("--reward-model", help="sequence classifier scoring prompt + response")
    p.add_argument("--reward-fn", help="or a reward function by import path pkg.module:function")
    p.add_argument("--positive-label", default="POSITIVE")
    p.add_argument("--judge", help="a second classifier the policies never trained against (gold judge); "
                                   "adds its positive probability and rate")
    p.add_argument("--data", default="stanfordnlp/imdb", help="IMDB source; prompts come from its test split")
    p.add_argument("--num-prompts", type=positive_int, default=512)
    p.add_argument("--prompt-min-tokens", type=int, default=2)
    p.add_argument("--prompt-max-tokens", type=int, default=8)
    p.add_argument("--max-new-tokens", type=positive_int, default=24)
    p.add_argument("--temperature", type=positive_float, default=0.7)
    p.add_argument("--stop-at-eos", action="store_true")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--compile-generation", action="store_true",
                   help="sample with the compiled decode step (same tokens; its one-time compile pays off "
                        "only over many batches)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-logdir", help="log folder of the PPO run, for the reward curve: TensorBoard's, or an "
                                        "MLflow file-store run folder")
    p.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", required=True, help="folder for metrics.json, samples.jsonl, report.md, plots")
    p.add_argument("--title", default="Evaluation report",
                   help="the report's heading (the quick preset says it is a smoke run)")
    args = p.parse_args(argv)
    if (args.reward_model is None) == (args.reward_fn is None):
        p.error("give exactly one of --reward-model and --reward-fn")
    names = [name for name, _ in args.policy]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        p.error(f"--policy {twice[0]}=... is given twice; give each policy its own NAME")
    check_inputs(args)

    start = time.perf_counter()
    policies = dict(args.policy)
    prompts = held_out_prompts(args.data, args.reference, args.num_prompts, args.seed,
                               args.prompt_min_tokens, args.prompt_max_tokens)
    _, reward = build_reward(args.reward_model, args.reward_fn, args.positive_label)
    if args.reward_model is not None:
        reward = reward.fn  # the classifier itself: it also gives the positive rate
    results = evaluate_policies(policies, args.reference, reward, prompts, args.max_new_tokens,
                                args.temperature, args.batch_size, args.seed, args.stop_at_eos,
                                args.device, load_judge(args.judge, args.positive_label), args.compile_generation)
    resolved = {name: str(Path(p).resolve()) if Path(p).exists() else p for name, p in policies.items()}
    config = {k: v for k, v in vars(args).items() if k not in ("policy",)} | {"policies": resolved}
    report = write_report(results, prompts, args.out, config, args.run_logdir, title=args.title)
    for r in results:
        f = r.figures
        print(f"{r.name}: reward {f['reward_mean']:+.3f} [{f['reward_ci95'][0]:+.3f}, "
              f"{f['reward_ci95'][1]:+.3f}], positive {f['positive_rate']}, KL {f['kl_to_reference']:.3f}, "
              f"ppl {f['perplexity_under_reference']:.1f}, distinct-2 {f['distinct_2']:.3f}")
    print(f"wrote {report} in {time.perf_counter() - start:.0f} s")



if __name__ == "__main__":
    main()
