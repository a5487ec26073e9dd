"""One decode step of any Hugging Face causal LM as a single compiled graph, on a static KV cache.

A decode step of a small model is about 170 MFLOP: its time goes to per-op dispatch and the
per-token Python of ``transformers``' forward (cache objects, mask building), not to arithmetic.
So the whole step (the model's own trunk forward on transformers' ``StaticCache``, the fp32 LM
head, temperature, sampling, EOS bookkeeping) is compiled once with ``fullgraph=True``: the
cache has the rollout's full length and fixed addresses, its write slot is a tensor inside it,
and the only Python per token is the call.

Because the step is the model's forward, every architecture whose forward compiles and whose
static cache is made of plain or sliding-window layers (GPT-2, Llama, Qwen2, Mistral, ...) is
covered, with its own attention scaling, rotary embeddings, norms and any peft LoRA layers
injected into it (a sliding window shorter than the rollout falls back to the eager loop).
GPT-2 takes a hand-written step instead (``generation.gpt2_step``), on the same cache tensors,
because it measured faster at the benchmark's target shape. Positions are the
left-padding-aware ones of the eager loop; the query's cache slot (from the
cache) drives the causal mask, the (b, length) attention mask the padding.

Sampling (``generation.token_sampling.sample_token``, shared with the eager loop) draws
``argmax(probs / q)`` with ``q ~ Exp(1)`` drawn outside the graph from the run's
``torch.Generator``: exactly what ``torch.multinomial(probs, 1)`` computes from the same
generator state, so the compiled and eager samplers give the same tokens and consume the
generator alike (exact resume either way).
"""

from __future__ import annotations

import weakref
from copy import deepcopy
from typing import Any

import torch
from transformers import StaticCache
from transformers.cache_utils import StaticLayer, StaticSlidingWindowLayer
from transformers.pytorch_utils import Conv1D

from lightning_rlhf.generation import gpt2_step
from lightning_rlhf.generation.eager import Decoded, Draw, cache_argument
from lightning_rlhf.generation.token_sampling import sample_token
from lightning_rlhf.models.forward import head_fp32, hf_model

CACHE_LAYERS = (StaticLayer, StaticSlidingWindowLayer)
MAX_CACHES = 4  # static caches kept per decoder (one per batch shape in use), oldest dropped first
RECOMPILE_LIMIT = 64  # compiled variants of the step per process (architecture x shape x precision)


def decode_step(trunk: torch.nn.Module, head: torch.nn.Module, cache: StaticCache, cache_arg: str,
                token: torch.Tensor, position: torch.Tensor, attention_mask: torch.Tensor, noise: torch.Tensor,
                finished: torch.Tensor, temperature: float, eos_token_id: int | None,
                pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feed ``token`` (b,) at ``position`` (b,) through ``trunk`` (the model's ``base_model``),
    which writes its keys/values into ``cache`` at the cache's next slot, and sample the next token.

    Args:
        head: the model's output embedding (its LM head), applied in fp32.
        attention_mask: (b, length) 1 on the cache slots of real tokens (prompt padding is 0).
        noise: (b, vocab) Exp(1) draws; all ones picks the most likely token (greedy).
        finished: (b,) bool, rows that already emitted EOS (they get ``pad_token_id``).
    Returns:
        next tokens (b,), their float32 log-probs under ``softmax(logits / temperature)``
        (0 for finished rows) and the updated ``finished`` (b,).
    """
    out = trunk(input_ids=token.unsqueeze(-1), attention_mask=attention_mask, position_ids=position.unsqueeze(-1),
                use_cache=True, **{cache_arg: cache})
    logits = head_fp32(head, out.last_hidden_state[:, -1])
    return sample_token(logits, noise, temperature, finished, eos_token_id, pad_token_id)


class StaticDecoder:
    """The compiled decode step of one model; compiled on first use, reused for every rollout.

    Holds the model by a weak reference only, so whoever owns the decoder (a ``Sampler``) never
    keeps a model alive. Parameters are read at call time (not baked into the graph), so
    optimizer steps on the policy are followed without recompiling. New shapes (batch size,
    cache length) compile once more; cache lengths are rounded up to a multiple of 16 to keep
    those few.

    Under autocast the step runs on a copy of the trunk whose linear weights are already in the
    autocast dtype, refreshed from the model once per rollout: autocast would otherwise cast
    every weight again at every token, which at decode batch sizes costs more than the matrix
    products. Norms, embeddings and the residual stream stay fp32, so the numbers are those of
    the autocast forward.
    """

    def __init__(self, model: torch.nn.Module, mode: str | None = None) -> None:
        self._model = weakref.ref(model)
        self._cast: tuple[torch.dtype, torch.nn.Module] | None = None
        self._caches: dict[tuple, StaticCache] = {}
        if mode is None:
            mode = "reduce-overhead" if next(model.parameters()).device.type == "cuda" else "default"
        # one code object serves every model (a new policy of a known shape reuses its graph), so
        # allow more entries than dynamo's default 8: architectures x batch shapes in one process
        self.gpt2 = gpt2_step.covers(model)  # GPT-2's hand-written step, measured faster (gpt2_step.py)
        self.step = torch.compile(gpt2_step.gpt2_decode_step if self.gpt2 else decode_step, mode=mode,
                                  dynamic=False, fullgraph=True, recompile_limit=RECOMPILE_LIMIT)

    @staticmethod
    def supports(model: torch.nn.Module) -> str | None:
        """None when the static path covers ``model``, else why not (one short phrase)."""
        lm = hf_model(model)
        config = getattr(lm, "config", None)
        name = getattr(config, "model_type", None) or type(lm).__name__
        if config is None or not getattr(lm, "_can_compile_fullgraph", False):
            return f"model type {name!r} does not declare a compilable forward"
        if getattr(config, "is_encoder_decoder", False) or getattr(config, "add_cross_attention", False):
            return f"model type {name!r} with cross-attention"
        try:
            layers = StaticCache(config=config, max_cache_len=16).layers
        except Exception as err:  # noqa: BLE001 - any config the cache cannot take means no static path
            return f"no static cache for model type {name!r} ({type(err).__name__})"
        other = sorted({type(layer).__name__ for layer in layers if type(layer) not in CACHE_LAYERS})
        if other:
            return f"model type {name!r} needs {', '.join(other)} cache layers"
        return None

    @property
    def model(self) -> torch.nn.Module:
        model = self._model()
        if model is None:
            raise ReferenceError("the model of this StaticDecoder was deleted")
        return model

    def trunk(self) -> torch.nn.Module:
        """The trunk for this rollout: the model's own, or under autocast its pre-cast copy."""
        base = hf_model(self.model).base_model
        device = next(base.parameters()).device.type
        if not torch.is_autocast_enabled(device):
            return base
        dtype = torch.get_autocast_dtype(device)
        if self._cast is None or self._cast[0] != dtype:
            copy = deepcopy(base).requires_grad_(False)
            for module in copy.modules():
                if isinstance(module, (Conv1D, torch.nn.Linear)):
                    module.to(dtype)
            self._cast = dtype, copy
        else:
            for mine, theirs in zip(self._cast[1].parameters(), base.parameters(), strict=True):
                mine.copy_(theirs)
        return self._cast[1]

    @staticmethod
    def cache_length(prompt_len: int, max_new_tokens: int) -> int:
        return -(-(prompt_len + max_new_tokens) // 16) * 16

    def cache(self, prefill: Any, length: int) -> StaticCache:
        """A (rows, heads, length, head_dim) static cache holding the prefill's keys/values,
        whose next write goes to the slot after them. One cache per shape is kept and reused:
        its tensors keep their addresses (CUDA graphs replay on them) and no new cache object
        means no new guards."""
        first = prefill.layers[0].keys
        key = (first.shape[0], length, first.dtype, first.device)
        cache = self._caches.pop(key, None)
        if cache is None:
            cache = static_cache(hf_model(self.model).config, length)
            if len(self._caches) >= MAX_CACHES:
                self._caches.pop(next(iter(self._caches)))
        self._caches[key] = cache
        for static, layer in zip(cache.layers, prefill.layers, strict=True):
            k, v = layer.keys, layer.values
            if not static.is_initialized:
                static.lazy_initialization(k, v)
            static.keys.zero_()
            static.values.zero_()
            static.keys[:, :, : k.shape[2]] = k
            static.values[:, :, : v.shape[2]] = v
            static.cumulative_length.fill_(k.shape[2])
        return cache

    def run(self, decoded: Decoded, draw: Draw, attention_mask: torch.Tensor, position_ids: torch.Tensor,
            prefill: Any) -> Decoded:
        """Tokens 2.. of ``decoded`` (which holds the prefill's first token) from the compiled step.

        Args:
            attention_mask, position_ids: (rows, q) of the prompts, as the prefill cache holds them.
            prefill: the eager prefill's dynamic cache, (rows, heads, q, head_dim) per layer.
        """
        rows, q = attention_mask.shape
        device = attention_mask.device
        cache = self.cache(prefill, self.cache_length(q, draw.max_new_tokens))
        mask = torch.ones(rows, cache.layers[0].max_cache_len, dtype=attention_mask.dtype, device=device)
        mask[:, :q] = attention_mask
        position = position_ids[:, -1] + 1
        head = hf_model(self.model).get_output_embeddings()
        vocab = head.weight.shape[0]
        trunk, cache_arg = self.trunk(), cache_argument(hf_model(self.model).base_model)
        if self.gpt2:
            keys, values = [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers]
            key_mask = torch.zeros_like(mask, dtype=torch.bool)
            key_mask[:, :q] = attention_mask.bool()
            slot = torch.tensor([q], device=device)
        while not decoded.done(draw):
            noise = draw.noise(rows, vocab, device)
            common = (noise, decoded.finished, draw.temperature, draw.eos_token_id, draw.pad_token_id)
            if self.gpt2:
                token, logp, finished = self.step(trunk, head, keys, values, decoded.tokens[-1], position, slot,
                                                  key_mask, *common)
                slot = slot + 1
            else:
                token, logp, finished = self.step(trunk, head, cache, cache_arg, decoded.tokens[-1], position, mask,
                                                  *common)
            decoded.append(token.clone(), logp.clone(), finished.clone())  # CUDA graphs reuse their outputs
            position = position + 1
        return decoded


def static_cache(config: Any, length: int) -> StaticCache:
    """transformers' ``StaticCache`` for ``config`` holding ``length`` tokens, with plain layers only.

    A sliding-window layer whose window holds the whole rollout is the same as a plain one, but
    its Python-int bookkeeping would recompile the step at every token, so it is swapped for a
    plain ``StaticLayer``; a window shorter than the rollout raises (the eager loop takes over).
    """
    cache = StaticCache(config=config, max_cache_len=length)
    for i, layer in enumerate(cache.layers):
        if type(layer) is StaticSlidingWindowLayer:
            if layer.max_cache_len < length:
                raise ValueError(f"sliding window of {layer.max_cache_len} tokens, shorter than the rollout's {length}")
            cache.layers[i] = StaticLayer(max_cache_len=length)
    return cache
