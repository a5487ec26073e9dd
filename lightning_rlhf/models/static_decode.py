"""One GPT-2 decode step as a single compiled graph, on a preallocated (static) KV cache.

A decode step of a small model is about 170 MFLOP: its time goes to per-op dispatch and the
per-token Python of ``transformers``' forward (cache objects, mask building), not to arithmetic.
So the whole step (embedding, blocks, final norm, fp32 LM head, temperature, sampling, EOS
bookkeeping) is written here as one function of fixed-shape tensors and compiled once: the
cache has the rollout's full length, the write slot and positions are tensors, and the only
Python per token is the call.

Sampling (``rl.token_sampling.sample_token``, shared with the eager loop) draws
``argmax(probs / q)`` with ``q ~ Exp(1)`` drawn outside the graph from the run's
``torch.Generator``: exactly what ``torch.multinomial(probs, 1)`` computes from the same
generator state, so the compiled and eager samplers give the same tokens and consume the
generator alike (exact resume either way).

The step calls the model's own submodules (``block.attn.c_attn``, ``block.mlp``, the norms), so
peft's LoRA layers injected into them take part, and the activation, ``n_inner`` and the norms'
epsilon are the model's. The attention scale is ``attn.scaling``, into which transformers (5.x)
folds both ``scale_attn_weights`` and ``scale_attn_by_inverse_layer_idx``. GPT-2 flags the step
does not implement (``reorder_and_upcast_attn``, cross-attention) are refused by ``supports``,
as are architectures other than GPT-2; those keep the eager loop in ``rl.sampling``.
"""

from __future__ import annotations

import weakref
from copy import deepcopy

import torch
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from lightning_rlhf.models.forward import hf_model, lm_head_fp32
from lightning_rlhf.rl.token_sampling import sample_token

UNSUPPORTED_GPT2_FLAGS = ("reorder_and_upcast_attn", "add_cross_attention")


def decode_step(model: torch.nn.Module, trunk: torch.nn.Module, keys: list[torch.Tensor], values: list[torch.Tensor],
                token: torch.Tensor, position: torch.Tensor, slot: torch.Tensor, key_mask: torch.Tensor,
                noise: torch.Tensor, finished: torch.Tensor, temperature: float, eos_token_id: int | None,
                pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feed ``token`` (b,) at ``position`` (b,), write its keys/values at cache index ``slot`` (1,),
    and sample the next token.

    Args:
        model: the causal LM, whose output embedding gives the fp32 LM head.
        trunk: its GPT-2 trunk (``StaticDecoder.trunk``: under autocast, a copy with pre-cast weights).
        keys, values: per layer (b, heads, length, head_dim), written in place.
        key_mask: (b, length) bool, which cache slots hold real tokens; ``slot`` is set in place.
        noise: (b, vocab) Exp(1) draws; all ones picks the most likely token (greedy).
        finished: (b,) bool, rows that already emitted EOS (they get ``pad_token_id``).
    Returns:
        next tokens (b,), their float32 log-probs under ``softmax(logits / temperature)``
        (0 for finished rows) and the updated ``finished`` (b,).
    """
    base, b = trunk, token.shape[0]
    heads = base.config.n_head
    key_mask.index_fill_(1, slot, True)
    attn_mask = key_mask[:, None, None, :]
    h = base.wte(token) + base.wpe(position)
    for i, block in enumerate(base.h):
        attn = block.attn
        q, k, v = attn.c_attn(block.ln_1(h)).view(b, 3, heads, -1).unbind(1)
        keys[i].index_copy_(2, slot, k.unsqueeze(2).to(keys[i].dtype))
        values[i].index_copy_(2, slot, v.unsqueeze(2).to(values[i].dtype))
        out = F.scaled_dot_product_attention(q.unsqueeze(2).to(keys[i].dtype), keys[i], values[i],
                                             attn_mask=attn_mask, scale=attn.scaling)
        h = h + attn.c_proj(out.reshape(b, -1).to(h.dtype))
        h = h + block.mlp(block.ln_2(h))
    logits = lm_head_fp32(model, base.ln_f(h))
    return sample_token(logits, noise, temperature, finished, eos_token_id, pad_token_id)


class StaticDecoder:
    """The compiled decode step of one model; compiled on first use, reused for every rollout.

    Parameters are read at call time (not baked into the graph), so optimizer steps on the
    policy are followed without recompiling. New shapes (batch size, cache length) compile once
    more; cache lengths are rounded up to a multiple of 16 to keep those few.

    Under autocast the step runs on a copy of the trunk whose matrix weights are already in the
    autocast dtype, refreshed from the model once per rollout: autocast would otherwise cast
    every weight again at every token, which at decode batch sizes costs more than the matrix
    products. Norms, embeddings and the residual stream stay fp32, so the numbers are those of
    the autocast forward.
    """

    def __init__(self, model: torch.nn.Module, mode: str | None = None) -> None:
        self._model = weakref.ref(model)  # the registry is keyed by the model: a strong ref would keep it alive
        self._cast: tuple[torch.dtype, torch.nn.Module] | None = None
        if mode is None:
            mode = "reduce-overhead" if next(model.parameters()).device.type == "cuda" else "default"
        self.step = torch.compile(decode_step, mode=mode, dynamic=False, fullgraph=True)

    @staticmethod
    def supports(model: torch.nn.Module) -> str | None:
        """None when the static path covers ``model``, else why not (one short phrase)."""
        lm = hf_model(model)
        config = getattr(lm, "config", None)
        if getattr(config, "model_type", None) != "gpt2":
            return f"no static-cache decode step for model type {getattr(config, 'model_type', type(lm).__name__)!r}"
        for flag in UNSUPPORTED_GPT2_FLAGS:
            if getattr(config, flag, False):
                return f"GPT-2 with {flag}: true"
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

    def new_cache(self, prefill_cache, rows: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Static (rows, heads, length, head_dim) buffers holding the prefill's keys/values."""
        keys, values = [], []
        for layer in prefill_cache.layers:
            k, v = layer.keys, layer.values
            repeat = rows // k.shape[0]
            shape = (rows, k.shape[1], length, k.shape[3])
            kb, vb = k.new_zeros(shape), v.new_zeros(shape)
            kb[:, :, : k.shape[2]] = k.repeat_interleave(repeat, 0)
            vb[:, :, : v.shape[2]] = v.repeat_interleave(repeat, 0)
            keys.append(kb)
            values.append(vb)
        return keys, values
