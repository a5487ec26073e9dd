"""KV-cached ancestral sampling from left-padded prompts, with an explicit RNG.

Our own loop rather than ``generate``: it samples from the plain temperature-scaled
distribution (no top-k/top-p, as PPO's log-probs assume), draws from a ``torch.Generator``
whose state goes into checkpoints (exact resume), and stops as soon as every row has hit EOS.
"""

from __future__ import annotations

import torch

from lightning_rlhf.models.forward import CachedDecoder
from lightning_rlhf.rl.logprobs import left_pad_position_ids, logprobs_from_logits


@torch.no_grad()
def sample_responses(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
    samples_per_prompt: int = 1,
    greedy: bool = False,
    return_logprobs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``max_new_tokens`` tokens per prompt, ``samples_per_prompt`` times each.

    Args:
        model: a Hugging Face causal LM (or a peft wrapper of one); the next-token logits come
            from its trunk and an fp32 LM head (``models.forward``), also under autocast.
        input_ids, attention_mask: (b, q) left-padded prompts.
        eos_token_id: stop token; rows that finished get ``pad_token_id`` afterwards, and the
            loop ends early once every row finished. None samples the full length.
        samples_per_prompt: k responses per prompt. The prompts are encoded once and their KV
            cache is repeated k times, so rows ``i * k .. i * k + k - 1`` answer prompt i; the
            draws are those of sampling from the prompts repeated with ``repeat_interleave``.
        greedy: take the most likely token instead of sampling (ReMax's baseline).
        return_logprobs: also return the sampler's own log-prob of each token under
            ``softmax(logits / temperature)`` from the cached decode (0 after a row's EOS): what
            the trainer's forward must reproduce (``rl.logprobs.logprob_mismatch``).
    Returns:
        (b * k, n) responses with n <= max_new_tokens, and with ``return_logprobs`` their
        (b * k, n) float32 log-probs.
    """
    was_training = model.training
    model.eval()  # KV cache needs eval mode under gradient checkpointing; dropout is off anyway
    try:
        tokens, logprobs = _sample(model, input_ids, attention_mask, max_new_tokens, temperature, generator,
                                   eos_token_id, pad_token_id, samples_per_prompt, greedy, return_logprobs)
        return (tokens, logprobs) if return_logprobs else tokens
    finally:
        model.train(was_training)


def _sample(model, input_ids, attention_mask, max_new_tokens, temperature, generator, eos_token_id,
            pad_token_id, samples_per_prompt, greedy, with_logprobs) -> tuple[torch.Tensor, torch.Tensor | None]:
    position_ids = left_pad_position_ids(attention_mask)
    decode = CachedDecoder(model)
    logits = decode(input_ids, attention_mask, position_ids)
    if samples_per_prompt > 1:
        logits = logits.repeat_interleave(samples_per_prompt, dim=0)
        attention_mask = attention_mask.repeat_interleave(samples_per_prompt, dim=0)
        position_ids = position_ids.repeat_interleave(samples_per_prompt, dim=0)
        decode.repeat_rows(samples_per_prompt)
    b = logits.shape[0]
    finished = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    ones = torch.ones((b, 1), dtype=attention_mask.dtype, device=attention_mask.device)
    tokens: list[torch.Tensor] = []
    logprobs: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        if greedy:
            token = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        if with_logprobs:
            logp = logprobs_from_logits(logits, token, temperature)
            logprobs.append(logp if eos_token_id is None else logp.masked_fill(finished, 0.0))
        if eos_token_id is not None:
            token = torch.where(finished, torch.full_like(token, pad_token_id), token)
            finished |= token == eos_token_id
        tokens.append(token)
        if step + 1 == max_new_tokens or (eos_token_id is not None and bool(finished.all())):
            break
        attention_mask = torch.cat([attention_mask, ones], dim=-1)
        position_ids = position_ids[:, -1:] + 1
        logits = decode(token.unsqueeze(-1), attention_mask, position_ids)
    return torch.stack(tokens, dim=-1), torch.stack(logprobs, dim=-1) if with_logprobs else None
