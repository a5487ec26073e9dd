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
    return decode_responses(tokenizer, responses, response_mask_after_stop(responses, eos),
                            after=(enc["input_ids"], enc["attention_mask"]))


def decode_responses(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor, mask: torch.Tensor | None = None,
                     after: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[str]:
    """Decode (b, t) ids, keeping only the positions where ``mask`` (b, t) is 1.

    Works for left-padded queries and for responses masked after their stop alike; special
    tokens (EOS, padding) are dropped, as a reward model's tokenizer expects plain text.

    ``after``: the (b, q) prompt ids and mask each row continues. Each row is then decoded after
    its prompt and the prompt's text cut off, so ``prompt + response`` is the text of the whole
    sequence: a SentencePiece tokenizer (Llama, Mistral) drops a leading space when a response
    is decoded alone ("the movie" + "was great"); byte-level BPE (GPT-2, Qwen) keeps it either way.
    """
    rows = kept_tokens(ids, mask)
    if after is None:
        return [tokenizer.decode(row, skip_special_tokens=True) for row in rows]
    return decode_with_prompts(tokenizer, kept_tokens(*after), rows)[1]


def decode_with_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]],
                        responses: list[list[int]]) -> tuple[list[str], list[str]]:
    """The texts of prompts and of the responses that continue them (token lists, padding
    already dropped), each prompt decoded once: ``prompt + response`` is the whole sequence's
    text (``decode_responses``'s ``after``); a response whose sequence does not start with its
    prompt's text is decoded alone."""
    heads, texts = [], []
    for prefix, row in zip(prompts, responses, strict=True):
        head = tokenizer.decode(prefix, skip_special_tokens=True)
        whole = tokenizer.decode(prefix + row, skip_special_tokens=True)
        heads.append(head)
        texts.append(whole[len(head):] if whole.startswith(head) else tokenizer.decode(row, skip_special_tokens=True))
    return heads, texts


def kept_tokens(ids: torch.Tensor, mask: torch.Tensor | None) -> list[list[int]]:
    """The rows of (b, t) ``ids`` as token lists, keeping the positions where ``mask`` is 1."""
    rows = ids.tolist()
    if mask is None:
        return rows
    return [[t for t, m in zip(row, keep, strict=True) if m] for row, keep in zip(rows, mask.tolist(), strict=True)]
