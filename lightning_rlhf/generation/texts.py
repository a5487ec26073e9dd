"""Text in, text out: encode prompt strings, sample continuations, decode responses."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from lightning_rlhf.generation.sampler import sample_responses
from lightning_rlhf.rl.masking import response_mask_after_stop


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], device: torch.device
) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``/``attention_mask`` (b, q) for ``prompts``."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


@torch.no_grad()
def generate_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float = 0.7,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> list[str]:
    """Sample one continuation per prompt with a private seeded generator (repeatable tables)."""
    device = next(model.parameters()).device
    enc = encode_prompts(tokenizer, prompts, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = tokenizer.eos_token_id if stop_at_eos else None
    responses = sample_responses(
        model, enc["input_ids"], enc["attention_mask"], max_new_tokens, temperature,
        generator, eos, tokenizer.pad_token_id,
    )
    return decode_responses(tokenizer, responses, response_mask_after_stop(responses, eos))


def decode_responses(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor,
                     mask: torch.Tensor | None = None) -> list[str]:
    """Decode (b, t) ids, keeping only the positions where ``mask`` (b, t) is 1.

    Works for left-padded queries and for responses masked after their stop alike; special
    tokens (EOS, padding) are dropped, as a reward model's tokenizer expects plain text.
    """
    rows = ids.tolist()
    if mask is not None:
        rows = [[t for t, m in zip(row, keep, strict=True) if m] for row, keep in zip(rows, mask.tolist(), strict=True)]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in rows]
