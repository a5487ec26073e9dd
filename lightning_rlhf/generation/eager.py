"""The eager KV-cache decode loop: ``transformers``' own forward with its dynamic cache, one
token per call, the fp32 LM head and ``sample_token`` on top.

It also makes every rollout's prefill (the prompt's forward and the first token), for the
compiled step as well: both paths then share the first token, the noise draws and the EOS
bookkeeping (``Draw``, ``Decoded``), and differ only in how tokens 2.. are computed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_rlhf.generation.token_sampling import exponential_noise, sample_token
from lightning_rlhf.models.forward import hf_model, lm_head_fp32


@dataclass
class Draw:
    """How one call samples: the settings the eager loop and the compiled step share."""

    max_new_tokens: int
    temperature: float = 1.0
    generator: torch.Generator | None = None
    eos_token_id: int | None = None
    pad_token_id: int = 0
    greedy: bool = False

    def noise(self, rows: int, vocab: int, device: torch.device) -> torch.Tensor:
        """(rows, vocab) Exp(1) draws from the run's generator (ones for greedy)."""
        return exponential_noise((rows, vocab), device, self.generator, self.greedy)

    def next_token(self, logits: torch.Tensor, finished: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token (b,), log-prob (b,) and updated ``finished`` (b,) from fp32 ``logits`` (b, v)."""
        noise = self.noise(logits.shape[0], logits.shape[1], logits.device)
        return sample_token(logits, noise, self.temperature, finished, self.eos_token_id, self.pad_token_id)

    def all_stopped(self, finished: torch.Tensor) -> bool:
        return self.eos_token_id is not None and bool(finished.all())


@dataclass
class Decoded:
    """What one call has sampled so far: per step the (rows,) tokens and log-probs, and the
    (rows,) rows that emitted EOS."""

    finished: torch.Tensor
    tokens: list[torch.Tensor] = field(default_factory=list)
    logprobs: list[torch.Tensor] = field(default_factory=list)

    def append(self, token: torch.Tensor, logprobs: torch.Tensor, finished: torch.Tensor) -> None:
        self.tokens.append(token)
        self.logprobs.append(logprobs)
        self.finished = finished

    def done(self, draw: Draw) -> bool:
        return len(self.tokens) >= draw.max_new_tokens or draw.all_stopped(self.finished)

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, n) tokens and their (rows, n) float32 log-probs."""
        return torch.stack(self.tokens, dim=-1), torch.stack(self.logprobs, dim=-1)


def cache_argument(base: torch.nn.Module) -> str:
    """The name of the cache argument of ``base.forward``: transformers 5.x renamed
    ``past_key_values`` to ``cache`` (the old name is deprecated)."""
    forward = getattr(base, "forward", base)
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


class CachedDecoder:
    """Incremental decoding with a KV cache: each call returns the fp32 logits (b, v) of the
    next token. The first call takes the prompt; later calls take one new token per row."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.base = hf_model(model).base_model
        self.cache_arg = cache_argument(self.base)
        self.cache: Any = None

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor) -> torch.Tensor:
        kwargs = {self.cache_arg: self.cache} if self.cache is not None else {}
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=True, **kwargs)
        self.cache = getattr(out, "cache", None) or out.past_key_values
        return lm_head_fp32(self.model, out.last_hidden_state[:, -1])

    def repeat_rows(self, k: int) -> None:
        """Repeat every row of the cache k times (``repeat_interleave``): k continuations of
        each prompt from one prefill."""
        if hasattr(self.cache, "batch_repeat_interleave"):
            self.cache.batch_repeat_interleave(k)
        else:  # legacy tuple-of-tuples cache
            self.cache = tuple(tuple(t.repeat_interleave(k, dim=0) for t in layer) for layer in self.cache)


def eager_steps(decode: CachedDecoder, decoded: Decoded, draw: Draw, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> Decoded:
    """Sample tokens 2.. with the eager forward until ``decoded.done``, right after the prefill.

    Args:
        attention_mask, position_ids: (rows, q) of the prompts in ``decode``'s cache.
    """
    position_ids = position_ids[:, -1:]
    while not decoded.done(draw):
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=-1)
        position_ids = position_ids + 1
        logits = decode(decoded.tokens[-1].unsqueeze(-1), attention_mask, position_ids)
        decoded.append(*draw.next_token(logits, decoded.finished))
    return decoded
