"""GPT-2's decode step written out by hand: the fast path of the static-cache decoder for GPT-2.

The generic step (``generation.static_step.decode_step``) runs the model's own forward on
transformers' ``StaticCache``; for GPT-2 at the benchmark's target shape (4 layers, d 256, 16
rows, 24 new tokens, fp32, 2-core CPU) it measured slower than this one, which feeds the token
through the model's own submodules (``attn.c_attn``, ``mlp``, the norms, so peft's LoRA layers
take part) with none of the forward's per-token mask and cache bookkeeping. It writes into the
same ``StaticCache`` tensors and samples with the same ``sample_token``, so both paths give
the eager loop's tokens. The attention scale is ``attn.scaling``, into which transformers 5.x
folds ``scale_attn_weights`` and ``scale_attn_by_inverse_layer_idx``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_rlhf.generation.token_sampling import sample_token
from lightning_rlhf.models.forward import head_fp32, hf_model

UNSUPPORTED_GPT2_FLAGS = ("reorder_and_upcast_attn", "add_cross_attention")


def covers(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a GPT-2 this step implements (no upcast reordering, no cross-attention)."""
    config = getattr(hf_model(model), "config", None)
    return getattr(config, "model_type", None) == "gpt2" and not any(
        getattr(config, flag, False) for flag in UNSUPPORTED_GPT2_FLAGS)


def gpt2_decode_step(trunk: torch.nn.Module, head: torch.nn.Module, keys: list[torch.Tensor],
                     values: list[torch.Tensor], token: torch.Tensor, position: torch.Tensor, slot: torch.Tensor,
                     key_mask: torch.Tensor, noise: torch.Tensor, finished: torch.Tensor, temperature: float,
                     eos_token_id: int | None, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feed ``token`` (b,) at ``position`` (b,), write its keys/values at cache index ``slot`` (1,),
    and sample the next token.

    Args:
        trunk: the GPT-2 trunk (``wte``, ``wpe``, ``h``, ``ln_f``); head: the LM head, applied in fp32.
        keys, values: per layer (b, heads, length, head_dim), written in place.
        key_mask: (b, length) bool, which cache slots hold real tokens; ``slot`` is set in place.
        noise: (b, vocab) Exp(1) draws; all ones picks the most likely token (greedy).
        finished: (b,) bool, rows that already emitted EOS (they get ``pad_token_id``).
    Returns:
        next tokens (b,), their float32 log-probs under ``softmax(logits / temperature)``
        (0 for finished rows) and the updated ``finished`` (b,).
    """
    b, heads = token.shape[0], trunk.config.n_head
    key_mask.index_fill_(1, slot, True)
    attn_mask = key_mask[:, None, None, :]
    h = trunk.wte(token) + trunk.wpe(position)
    for i, block in enumerate(trunk.h):
        attn = block.attn
        q, k, v = attn.c_attn(block.ln_1(h)).view(b, 3, heads, -1).unbind(1)
        keys[i].index_copy_(2, slot, k.unsqueeze(2).to(keys[i].dtype))
        values[i].index_copy_(2, slot, v.unsqueeze(2).to(values[i].dtype))
        out = F.scaled_dot_product_attention(q.unsqueeze(2).to(keys[i].dtype), keys[i], values[i],
                                             attn_mask=attn_mask, scale=attn.scaling)
        h = h + attn.c_proj(out.reshape(b, -1).to(h.dtype))
        h = h + block.mlp(block.ln_2(h))
    logits = head_fp32(head, trunk.ln_f(h))
    return sample_token(logits, noise, temperature, finished, eos_token_id, pad_token_id)
