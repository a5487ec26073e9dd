"""Time the real PPO training step (``PPOModule`` under a Lightning ``Trainer``) against a floor.

The floor, measured in the same process on the same models, is what one PPO iteration cannot
avoid: one KV-cached generation of the batch, one policy forward/backward over prompt +
response, one reference forward, one reward forward and one optimizer step.

``--estimator rloo|grpo|...`` times a critic-free estimator instead (no value head), with
``--samples-per-prompt`` k: ``--batch-size`` stays the number of samples per iteration, drawn
from batch-size / k prompts, so every estimator is timed on the same number of samples.

Models are random GPT-2s built from the flags; the reward is a GPT-2 sequence classifier of the
same size, called through the project's reward interface (``SentimentClassifierReward``). The
tokenizer is a word-level one built offline with exactly ``--vocab-size`` tokens. Responses have
a fixed length (no EOS stop) so runs compare. The last line printed is one JSON object.

The PPO iterations sample with the compiled decode step (``--no-compile-generation``: the eager
loop); the floor is measured alongside, and for reference the eager loop, the compiled step and
``transformers.generate`` on the same batch. ``--precision 32-true,bf16-mixed`` runs both
precisions one after the other in the same process. torch.compile gets a fresh on-disk cache, so
the first iteration includes a first run's compile cost.

    python benchmarks/ppo_throughput.py --n-layer 4 --n-head 4 --n-embd 256 --vocab-size 2000 \\
        --batch-size 16 --prompt-len 8 --response-len 24 --ppo-epochs 1 --num-mini-batches 1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning as L
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.utils.data import DataLoader, Dataset
from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

from lightning_rlhf.generation import sample_responses
from lightning_rlhf.modules import PPOModule
from lightning_rlhf.precision import cpu_bf16_flags
from lightning_rlhf.rl.logprobs import logprobs_from_logits

PHASES = ("time/generate", "time/score", "time/forward", "time/update", "rollout/logprob_diff_mean")


def build_tokenizer(vocab_size: int, folder: Path) -> PreTrainedTokenizerFast:
    """Word-level tokenizer with exactly ``vocab_size`` tokens: ``<eos>``, ``<pad>``, ``w2``..."""
    vocab = {"<eos>": 0, "<pad>": 1} | {f"w{i}": i for i in range(2, vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    fast.save_pretrained(folder)
    return fast


class RandomPrompts(Dataset):
    """Fixed-length prompts of random non-special token ids."""

    def __init__(self, n: int, length: int, vocab_size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, vocab_size, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i])}


class IterationTimer(L.Callback):
    """Wall time of every training batch (one PPO iteration) and the module's phase timings."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.phases: list[dict[str, float]] = []

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(pl_module)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self.start)
        self.phases.append({k: float(trainer.callback_metrics[k]) for k in PHASES})


class PhaseClock:
    """``with clock("name"): ...`` appends the block's wall time (GPU work included) to ``times``."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times = device, {}

    @contextmanager
    def __call__(self, key: str):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times.setdefault(key, []).append(time.perf_counter() - t0)


def measure_floor(module: PPOModule, prompts: torch.Tensor, response_len: int, repeats: int, k: int = 1) -> dict:
    """Median seconds of each unavoidable piece, on the module's own models and device
    (``prompts`` (b / k, q), each sampled k times), generating as the module does; then, for
    reference and not in the floor, the eager and the compiled sampling loops and
    ``transformers.generate`` on the same batch."""
    device, policy, compiled = module.device, module.policy, module.hparams.compile_generation
    mask = torch.ones_like(prompts)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-6)
    ref = module.ref_model if module.ref_model is not None else policy.lm
    gen = torch.Generator(device=device).manual_seed(0)
    clock = PhaseClock(device)
    for _ in range(repeats + 1):
        with module.trainer.precision_plugin.forward_context():
            with clock("generate"):
                responses = sample_responses(policy.lm, prompts, mask, response_len, 0.7, gen, None, 1,
                                             samples_per_prompt=k, compile_generation=compiled)
            ids = torch.cat([prompts.repeat_interleave(k, 0), responses], -1)
            full = torch.ones_like(ids)
            with clock("policy_fwd_bwd"):
                logits, values = policy(ids, full, response_len)
                loss = logprobs_from_logits(logits, responses, 0.7).mean()
                (loss + values.mean() if values is not None else loss).backward()
            with torch.no_grad():
                adapter_off = policy.lm.disable_adapter() if module.ref_model is None else nullcontext()
                with clock("ref_fwd"), adapter_off:
                    ref(input_ids=ids, attention_mask=full, logits_to_keep=response_len + 1)
                with clock("reward_fwd"):
                    module.reward.model(input_ids=ids, attention_mask=full)
        with clock("optimizer_step"):
            opt.step()
            opt.zero_grad()
    med = {k: statistics.median(v[1:]) for k, v in clock.times.items()}  # first repeat warms up
    med["total"] = sum(med.values())
    reference = PhaseClock(device)
    for _ in range(repeats + 1):
        with module.trainer.precision_plugin.forward_context(), torch.no_grad():
            for name, compile_generation in (("eager_generate", False), ("compiled_generate", True)):
                with reference(name):
                    sample_responses(policy.lm, prompts, mask, response_len, 0.7, gen, None, 1, samples_per_prompt=k,
                                     compile_generation=compile_generation)
            with reference("hf_generate"):
                policy.lm.generate(input_ids=prompts.repeat_interleave(k, 0),
                                   attention_mask=mask.repeat_interleave(k, 0), do_sample=True, top_k=0, top_p=1.0,
                                   temperature=0.7, max_new_tokens=response_len, min_new_tokens=response_len,
                                   pad_token_id=1)
    med.update({f"{name}_reference_only": statistics.median(v[1:]) for name, v in reference.times.items()})
    return med


def run(args: argparse.Namespace, precision: str, tmp: Path) -> dict:
    """One PPO training run at ``precision`` and its floor; the figures as a dict."""
    torch.manual_seed(0)
    k = args.samples_per_prompt
    n_prompts = args.batch_size // k
    module = PPOModule(
        policy_name_or_path=None, policy_config={"model_type": "gpt2", **model_size(args)},
        tokenizer_name_or_path=str(tmp / "policy"),
        reward_model=str(tmp / "reward"), reward_batch_size=args.batch_size,
        response_min_tokens=args.response_len, response_max_tokens=args.response_len,
        ppo_epochs=args.ppo_epochs, num_mini_batches=args.num_mini_batches,
        micro_batch_size=args.micro_batch_size, adaptive_kl=True, lora_r=args.lora_r,
        gradient_checkpointing=args.gradient_checkpointing, export_dir=str(tmp / "export"),
        separate_critic=args.separate_critic, fuse_first_forward=not args.no_fuse,
        advantage_estimator=args.estimator, samples_per_prompt=k, compile_generation=args.compile_generation,
    )
    steps_per_iter = args.ppo_epochs * args.num_mini_batches
    n_iters = args.warmup + args.iters
    data = RandomPrompts(n_prompts * n_iters, args.prompt_len, args.vocab_size)
    timer = IterationTimer()
    trainer = L.Trainer(accelerator=args.device, devices=1, precision=precision,
                        max_steps=n_iters * steps_per_iter, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        default_root_dir=tmp)
    trainer.fit(module, DataLoader(data, batch_size=n_prompts))

    seconds = timer.seconds[args.warmup:]
    median = statistics.median(seconds)
    phases = {k.split("/")[1]: statistics.median(p[k] for p in timer.phases[args.warmup:]) for k in PHASES[:4]}
    floor = measure_floor(module, data.ids[:n_prompts].to(module.device), args.response_len, args.floor_repeats, k)
    result = {
        "precision": precision,
        "median_iter_s": median,
        "samples_per_s": args.batch_size / median,
        "response_tokens_per_s": args.batch_size * args.response_len / median,
        "first_iter_s": timer.seconds[0],
        "phases_s": phases,
        "floor_s": floor,
        "iter_over_floor": median / floor["total"],
        "generate_speedup_vs_hf_generate": floor["hf_generate_reference_only"] / phases["generate"],
        "compiled_over_eager_generate": (floor["eager_generate_reference_only"]
                                         / floor["compiled_generate_reference_only"]),
        "logprob_diff_mean": statistics.median(p["rollout/logprob_diff_mean"] for p in timer.phases[args.warmup:]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "policy_params_trainable": sum(p.numel() for p in module.policy.parameters() if p.requires_grad),
    }
    if args.device == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(f"{precision}: median {median:.3f} s/iter, {result['samples_per_s']:.1f} samples/s, "
          f"floor {floor['total']:.3f} s, iter/floor {result['iter_over_floor']:.3f}; generate "
          f"{phases['generate']:.3f} s (eager loop {floor['eager_generate_reference_only']:.3f}, compiled "
          f"{floor['compiled_generate_reference_only']:.3f}, transformers.generate "
          f"{floor['hf_generate_reference_only']:.3f}); first iteration {timer.seconds[0]:.1f} s", flush=True)
    return result


def model_size(args: argparse.Namespace) -> dict:
    return dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, vocab_size=args.vocab_size,
                n_positions=max(64, args.prompt_len + args.response_len), eos_token_id=0, pad_token_id=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("n-layer", 4), ("n-head", 4), ("n-embd", 256), ("vocab-size", 2000),
                          ("batch-size", 16), ("prompt-len", 8), ("response-len", 24), ("ppo-epochs", 1),
                          ("num-mini-batches", 1), ("iters", 10), ("warmup", 3), ("threads", 2),
                          ("lora-r", 0), ("floor-repeats", 5)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--micro-batch-size", type=int, default=None)
    p.add_argument("--precision", default="32-true",
                   help="32-true, bf16-mixed, 16-mixed, or several with commas (one run each, same process)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--compile-generation", action=argparse.BooleanOptionalAction, default=True,
                   help="the PPO iterations sample with the compiled decode step (the default)")
    p.add_argument("--warm-compile-cache", action="store_true",
                   help="reuse torch.compile's on-disk cache; by default a fresh one (a first run's compile cost)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--separate-critic", action="store_true", help="a second trunk for values (TRL's design)")
    p.add_argument("--no-fuse", action="store_true", help="run the rollout's policy forward separately")
    p.add_argument("--estimator", default="gae", help="gae (PPO), rloo, grpo, dr_grpo, reinforce_pp, ...")
    p.add_argument("--samples-per-prompt", type=int, default=1, help="k; --batch-size counts samples")
    args = p.parse_args()
    if args.batch_size % args.samples_per_prompt:
        p.error(f"--batch-size {args.batch_size} is not a multiple of --samples-per-prompt {args.samples_per_prompt}")
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="ppo_bench_"))
    if not args.warm_compile_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")

    torch.manual_seed(0)
    build_tokenizer(args.vocab_size, tmp / "policy").save_pretrained(tmp / "reward")
    reward = GPT2ForSequenceClassification(GPT2Config(**model_size(args), num_labels=2,
                                                      id2label={0: "NEGATIVE", 1: "POSITIVE"}))
    reward.save_pretrained(tmp / "reward")
    runs = [run(args, precision, tmp) for precision in args.precision.split(",")]
    result = {"config": vars(args), "cpu": cpu_name(), "runs": runs}
    if len(runs) > 1:
        result["samples_per_s_over_first"] = [r["samples_per_s"] / runs[0]["samples_per_s"] for r in runs]
    print(json.dumps(result))


def cpu_name() -> str:
    """The CPU model and its native-bf16 flags, as a README figure must name them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    return f"{name} ({', '.join(cpu_bf16_flags() or []) or 'no native bf16'})"


if __name__ == "__main__":
    main()
