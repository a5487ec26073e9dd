"""KV-cached ancestral sampling from left-padded prompts, with an explicit RNG.

Our own loop rather than ``generate``: it samples from the plain temperature-scaled
distribution (no top-k/top-p, as PPO's log-probs assume), draws from a ``torch.Generator``
whose state goes into checkpoints (exact resume), and stops as soon as every row has hit EOS.

With ``compile_generation`` the prompt's prefill stays the eager ``transformers`` forward and
every later token comes from one compiled graph on a static KV cache
(``models.static_decode``); both paths share ``sample_token`` and the same noise draws, so they
give the same tokens for the same generator state.
"""

from __future__ import annotations

import weakref

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_rlhf.models.forward import CachedDecoder, hf_model
from lightning_rlhf.models.static_decode import StaticDecoder
from lightning_rlhf.rl.logprobs import left_pad_position_ids
from lightning_rlhf.rl.token_sampling import exponential_noise, sample_token

_DECODERS: weakref.WeakKeyDictionary[torch.nn.Module, StaticDecoder | None] = weakref.WeakKeyDictionary()


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
    compile_generation: bool = False,
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
        compile_generation: decode with the compiled static-cache step (compiled once per model
            and shape, then reused); models without one, or where compiling fails, fall back to
            the eager loop with a one-line notice.
    Returns:
        (b * k, n) responses with n <= max_new_tokens, and with ``return_logprobs`` their
        (b * k, n) float32 log-probs.
    """
    was_training = model.training
    model.eval()  # KV cache needs eval mode under gradient checkpointing; dropout is off anyway
    try:
        static = static_decoder(model) if compile_generation else None
        tokens, logprobs = _sample(model, input_ids, attention_mask, max_new_tokens, temperature, generator,
                                   eos_token_id, pad_token_id, samples_per_prompt, greedy, static)
        return (tokens, logprobs) if return_logprobs else tokens
    finally:
        model.train(was_training)


def static_decoder(model: torch.nn.Module) -> StaticDecoder | None:
    """The model's compiled decoder, made on first use; None (after one notice) where there is none."""
    if model not in _DECODERS:
        why = StaticDecoder.supports(model)
        if why is not None:
            rank_zero_warn(f"compile_generation: {why}; sampling with the eager loop")
        _DECODERS[model] = StaticDecoder(model) if why is None else None
    return _DECODERS[model]


def _sample(model, input_ids, attention_mask, max_new_tokens, temperature, generator, eos_token_id,
            pad_token_id, samples_per_prompt, greedy, static) -> tuple[torch.Tensor, torch.Tensor]:
    position_ids = left_pad_position_ids(attention_mask)
    decode = CachedDecoder(model)
    logits = decode(input_ids, attention_mask, position_ids)
    if samples_per_prompt > 1:
        logits = logits.repeat_interleave(samples_per_prompt, dim=0)
        attention_mask = attention_mask.repeat_interleave(samples_per_prompt, dim=0)
        position_ids = position_ids.repeat_interleave(samples_per_prompt, dim=0)
        decode.repeat_rows(samples_per_prompt)
    b, device = logits.shape[0], logits.device
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    noise = exponential_noise(logits.shape, device, generator, greedy)
    token, logp, finished = sample_token(logits, noise, temperature, finished, eos_token_id, pad_token_id)
    tokens, logprobs = [token], [logp]
    done = max_new_tokens == 1 or (eos_token_id is not None and bool(finished.all()))
    if not done and static is not None:
        rest = _static_steps(static, decode, model, tokens, logprobs, finished, attention_mask, position_ids,
                             max_new_tokens, temperature, generator, eos_token_id, pad_token_id, greedy)
        if rest is not None:
            return rest
    for _ in range(1, 1 if done else max_new_tokens):
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=-1)
        position_ids = position_ids[:, -1:] + 1
        logits = decode(token.unsqueeze(-1), attention_mask, position_ids)
        noise = exponential_noise(logits.shape, device, generator, greedy)
        token, logp, finished = sample_token(logits, noise, temperature, finished, eos_token_id, pad_token_id)
        tokens.append(token)
        logprobs.append(logp)
        if eos_token_id is not None and bool(finished.all()):
            break
    return torch.stack(tokens, dim=-1), torch.stack(logprobs, dim=-1)


def _static_steps(static, decode, model, tokens, logprobs, finished, attention_mask, position_ids, max_new_tokens,
                  temperature, generator, eos_token_id, pad_token_id, greedy):
    """Tokens 2.. of the eager loop from the compiled step; None (generator untouched) if it fails."""
    b, q = attention_mask.shape
    device = attention_mask.device
    state = generator.get_state() if generator is not None else _global_rng_state(device)
    try:
        keys, values = static.new_cache(decode.cache, b, StaticDecoder.cache_length(q, max_new_tokens))
        key_mask = torch.zeros(b, keys[0].shape[2], dtype=torch.bool, device=device)
        key_mask[:, :q] = attention_mask.bool()
        position, slot = position_ids[:, -1] + 1, torch.tensor([q], device=device)
        token, vocab = tokens[-1], hf_model(model).get_output_embeddings().weight.shape[0]
        trunk = static.trunk()
        for _ in range(1, max_new_tokens):
            noise = exponential_noise((b, vocab), device, generator, greedy)
            token, logp, finished = static.step(model, trunk, keys, values, token, position, slot, key_mask, noise,
                                                finished, temperature, eos_token_id, pad_token_id)
            tokens.append(token.clone())
            logprobs.append(logp.clone())
            if eos_token_id is not None and bool(finished.all()):
                break
            position, slot = position + 1, slot + 1
    except Exception as err:  # noqa: BLE001 - any compile/backend failure falls back to the eager loop
        _DECODERS[model] = None
        rank_zero_warn(f"compile_generation: compiling the decode step failed ({type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''}); sampling with the eager loop")
        del tokens[1:], logprobs[1:]
        if generator is not None:
            generator.set_state(state)
        elif device.type == "cuda":
            torch.cuda.set_rng_state(state, device)
        else:
            torch.set_rng_state(state)
        return None
    return torch.stack(tokens, dim=-1), torch.stack(logprobs, dim=-1)


def _global_rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()
