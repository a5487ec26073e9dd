"""``lightning-rlhf-preferences``: machine-labelled preference pairs, the DPO paper's protocol.

k completions per training prompt from a policy export (the SFT model), scored by a reward
(a classifier export, a hub classifier or a ``reward_fn``), turned into (chosen, rejected) pairs
and written as ``train-NNNNN.jsonl`` shards with ``settings.json`` beside them. ``--pairs
best_worst`` makes one pair per prompt, the best against the worst of its k samples, and each
such row also records ``pairs: best_worst`` and ``samples_per_prompt: k`` (the BoNBoN loss reads
them). ``--human-candidate`` adds each review's own continuation to its prompt's samples, so
pairs can set human text against machine text (a reward model then also sees text like the
reviews it is judged on). Each shard is
written whole (temporary file, then rename) and sampled from its own seeded generator, so a
killed run keeps its finished shards and a rerun with the same settings makes the same pairs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lightning_rlhf.data import IMDBDataModule
from lightning_rlhf.data.collate import pad_rows
from lightning_rlhf.data.preferences import make_pairs
from lightning_rlhf.errors import (
    ArgumentParser,
    ConfigError,
    check_output_folder,
    device_arg,
    positive_float,
    positive_int,
    run_console,
)
from lightning_rlhf.export import write_text_atomic
from lightning_rlhf.generation import decode_responses, decode_with_prompts, sample_responses
from lightning_rlhf.models.loading import check_model_input, load_causal_lm
from lightning_rlhf.rewards import build_reward
from lightning_rlhf.rl.masking import response_mask_after_stop

SETTINGS = ("policy", "reward_model", "reward_fn", "positive_label", "data", "num_prompts", "samples_per_prompt",
            "pairs", "min_margin", "max_new_tokens", "temperature", "stop_at_eos", "prompt_min_tokens",
            "prompt_max_tokens", "min_review_chars", "shard_size", "seed", "human_candidate")


def _settings(out: Path, settings: dict) -> None:
    """Write the settings, or check that a folder being resumed was made with the same ones."""
    path = out / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        if changed:
            raise ConfigError(f"'{out}' holds pairs made with other settings ({', '.join(changed)}); "
                              f"use another --out, or delete the folder to start over")
        return
    write_text_atomic(path, json.dumps(settings, indent=2))


def _check_kept_shards(out: Path, pairs: str) -> None:
    """best_worst shards kept from a run that did not record ``samples_per_prompt`` cannot be read
    together with new ones (their columns differ): refuse before sampling anything."""
    if pairs != "best_worst":
        return
    for path in sorted(out.glob("train-*.jsonl")):
        with path.open() as f:
            first = f.readline()
        if first.strip() and "samples_per_prompt" not in json.loads(first):
            raise ConfigError(f"'{out}' holds best_worst pairs made before they recorded samples_per_prompt "
                              f"({path.name}); use another --out, or delete the folder to start over")


@torch.no_grad()
def make_shard(model, tokenizer, reward, prompt_ids: list[list[int]], args, generator: torch.Generator,
               device: torch.device, human_ids: list[list[int]] | None = None) -> list[dict]:
    """Sample, score and pair the completions of one shard's prompts.

    ``human_ids``: per prompt, the review's own next tokens (``--human-candidate``); each joins its
    prompt's samples as one more candidate, scored and paired like them, so pairs can put a human
    continuation against a machine one.
    """
    k, rows = args.samples_per_prompt, []
    best_of_k = {"pairs": "best_worst", "samples_per_prompt": k} if args.pairs == "best_worst" else {}
    eos = tokenizer.eos_token_id if args.stop_at_eos else None
    for start in range(0, len(prompt_ids), args.batch_size):
        ids, mask = pad_rows([{"input_ids": p} for p in prompt_ids[start: start + args.batch_size]],
                             tokenizer.pad_token_id, left=True)
        ids, mask = ids.to(device), mask.to(device)
        responses = sample_responses(model, ids, mask, args.max_new_tokens, args.temperature, generator, eos,
                                     tokenizer.pad_token_id, samples_per_prompt=k)
        prompts = decode_responses(tokenizer, ids, mask)
        texts = decode_responses(tokenizer, responses, response_mask_after_stop(responses, eos),
                                 after=(ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)))
        if human_ids is not None:
            humans = decode_with_prompts(tokenizer, prompt_ids[start: start + args.batch_size],
                                         human_ids[start: start + args.batch_size])[1]
            texts = [t for i, h in enumerate(humans) for t in (*texts[i * k: (i + 1) * k], h)]
        n = k + (human_ids is not None)
        scores = reward([p for p in prompts for _ in range(n)], texts).tolist()
        for i, prompt in enumerate(prompts):
            group, group_scores = texts[i * n: (i + 1) * n], scores[i * n: (i + 1) * n]
            for c, r in make_pairs(group_scores, args.pairs, args.min_margin):
                rows.append({"prompt": prompt, "chosen": group[c], "rejected": group[r],
                             "chosen_score": group_scores[c], "rejected_score": group_scores[r], **best_of_k})
    return rows


def _main(argv: list[str]) -> None:
    p = ArgumentParser(prog="lightning-rlhf-preferences", description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="causal LM export that samples the completions (the SFT model)")
    p.add_argument("--reward-model", help="sequence classifier that labels them")
    p.add_argument("--reward-fn", help="or a reward function by import path pkg.module:function")
    p.add_argument("--positive-label", default="POSITIVE")
    p.add_argument("--data", default="stanfordnlp/imdb", help="IMDB source; prompts come from its train split")
    p.add_argument("--out", required=True, help="folder for the pair shards and settings.json")
    p.add_argument("--num-prompts", type=int, default=2000)
    p.add_argument("--samples-per-prompt", type=int, default=4)
    p.add_argument("--pairs", default="all", choices=["all", "best_worst"],
                   help="all: every ordered pair (DPO); best_worst: the best against the worst of the samples, "
                        "one pair per prompt (BoNBoN's data)")
    p.add_argument("--min-margin", type=float, default=0.0, help="keep pairs whose scores differ by more")
    p.add_argument("--max-new-tokens", type=positive_int, default=24)
    p.add_argument("--temperature", type=positive_float, default=0.7)
    p.add_argument("--stop-at-eos", action="store_true")
    p.add_argument("--prompt-min-tokens", type=int, default=2)
    p.add_argument("--prompt-max-tokens", type=int, default=8)
    p.add_argument("--min-review-chars", type=int, default=200)
    p.add_argument("--human-candidate", action="store_true",
                   help="add each review's own next --max-new-tokens tokens as one more candidate per prompt")
    p.add_argument("--batch-size", type=positive_int, default=64, help="prompts per generation batch")
    p.add_argument("--shard-size", type=int, default=500, help="prompts per shard (the unit a rerun skips)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if (args.reward_model is None) == (args.reward_fn is None):
        p.error("give exactly one of --reward-model and --reward-fn")
    if args.samples_per_prompt < 2 or args.num_prompts < 1 or args.shard_size < 1:
        p.error("--samples-per-prompt must be at least 2, --num-prompts and --shard-size at least 1")
    if args.human_candidate and args.pairs == "best_worst":
        p.error("--human-candidate with --pairs best_worst: best-of-k pairs must all be the policy's samples; "
                "drop one of the two")
    check_model_input(args.policy, "--policy")
    check_model_input(args.reward_model, "--reward-model")
    check_output_folder(args.out, "--out")

    start, out = time.perf_counter(), Path(args.out)
    dm = IMDBDataModule(data_path=args.data, tokenizer=args.policy, shape="prompts", seed=args.seed,
                        val_size=10, max_eval_samples=10, min_review_chars=args.min_review_chars,
                        prompt_min_tokens=args.prompt_min_tokens, prompt_max_tokens=args.prompt_max_tokens,
                        continuation_tokens=args.max_new_tokens if args.human_candidate else 0)
    dm.setup("fit")
    prompt_ids = dm.splits["train"]["input_ids"][: args.num_prompts]
    human_ids = dm.splits["train"]["continuation_ids"][: args.num_prompts] if args.human_candidate else None
    if len(prompt_ids) < args.num_prompts:
        raise ConfigError(f"only {len(prompt_ids)} training prompts are available, {args.num_prompts} were asked for")
    device = torch.device(args.device)
    tokenizer = dm.tokenizer  # the policy's, loaded once
    model = load_causal_lm(args.policy).to(device).eval()
    reward_module, reward = build_reward(args.reward_model, args.reward_fn, args.positive_label)
    if reward_module is not None:
        reward_module.to(device)
    out.mkdir(parents=True, exist_ok=True)  # only once every input has loaded
    _settings(out, {k: getattr(args, k) for k in SETTINGS})
    _check_kept_shards(out, args.pairs)
    shards = range(0, args.num_prompts, args.shard_size)
    total = 0
    for n, first in enumerate(shards):
        path = out / f"train-{n:05d}.jsonl"
        if path.exists():
            total += sum(1 for _ in path.open())
            print(f"[preferences] shard {n + 1}/{len(shards)}: kept from an earlier run", flush=True)
            continue
        generator = torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + n)
        rows = make_shard(model, tokenizer, reward, prompt_ids[first: first + args.shard_size], args, generator,
                          device, None if human_ids is None else human_ids[first: first + args.shard_size])
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
        total += len(rows)
        print(f"[preferences] shard {n + 1}/{len(shards)}: {len(rows)} pairs, {total} in all, "
              f"{time.perf_counter() - start:.0f} s elapsed", flush=True)
    print(f"[preferences] done: {total} pairs from {args.num_prompts} prompts x {args.samples_per_prompt} samples "
          f"in {time.perf_counter() - start:.0f} s -> {out}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lightning-rlhf-preferences``."""
    run_console(_main, "lightning-rlhf-preferences", argv)


if __name__ == "__main__":
    main()
