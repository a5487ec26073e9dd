"""How far log-probs under autocast land from fp32: a 16-bit LM head against ours (fp32 head).

A GPT-2-shaped random model whose final layer norm is scaled so that logits have a trained
model's spread (a few units); the same token batch is scored in fp32 and under autocast, once
with the model's own forward (LM head under autocast, as before 2026-11-25) and once through
``models.forward.response_logits`` (LM head in fp32). Prints mean and max |difference| in nats
per token, and a JSON line.

    python benchmarks/logprob_precision.py --device cpu --dtype bf16
    python benchmarks/logprob_precision.py --device cuda --dtype fp16 --n-layer 12 --n-embd 768 --vocab-size 50257
"""

from __future__ import annotations

import argparse
import json

import torch

from lightning_rlhf.models.forward import response_logits
from lightning_rlhf.models.loading import build_from_config
from lightning_rlhf.rl.logprobs import left_pad_position_ids, logprobs_from_logits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--logit-scale", type=float, default=10.0, help="multiplies the weight of ln_f")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--response", type=int, default=24)
    args = p.parse_args()
    config = {"model_type": "gpt2", "n_layer": args.n_layer, "n_head": max(1, args.n_embd // 64),
              "n_embd": args.n_embd, "n_positions": 256, "vocab_size": args.vocab_size}
    model = build_from_config(config, "causal_lm", seed=0).to(args.device).eval()
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(args.logit_scale)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab_size, (args.batch_size, args.length), generator=g).to(args.device)
    mask = torch.ones_like(ids)
    r = args.response
    tokens = ids[:, -r:]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16

    def own_head() -> torch.Tensor:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=left_pad_position_ids(mask),
                       logits_to_keep=r + 1).logits[:, :-1]
        return logprobs_from_logits(logits, tokens, 0.7)

    with torch.no_grad():
        fp32 = logprobs_from_logits(response_logits(model, ids, mask, r), tokens, 0.7)
        with torch.autocast(args.device.split(":")[0], dtype=dtype):
            low_head = own_head()
            ours = logprobs_from_logits(response_logits(model, ids, mask, r), tokens, 0.7)
    result = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "dtype": args.dtype, "logit_std": float(response_logits(model, ids, mask, r).std()),
              "low_precision_head": {"mean": float((low_head - fp32).abs().mean()),
                                     "max": float((low_head - fp32).abs().max())},
              "fp32_head": {"mean": float((ours - fp32).abs().mean()), "max": float((ours - fp32).abs().max())}}
    for key in ("low_precision_head", "fp32_head"):
        print(f"{key:>20}: mean {result[key]['mean']:.4f}, max {result[key]['max']:.4f} nats per token")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
