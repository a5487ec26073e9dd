"""Causal-LM forwards in two halves: the trunk (under autocast) and the LM head in fp32.

Under ``bf16-mixed``/``16-mixed`` autocast rounds the LM head's logits to 16 bits before the
log-softmax; the noise (about 0.05 nats per token on a synthetic check) reaches the log-ratio,
which the KL penalty and the clipped ratio read as signal. So every log-prob and every sampling
distribution here comes from the trunk's last hidden state multiplied by the head in fp32,
outside autocast, and only at the positions that are needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from lightning_rlhf.rl.logprobs import left_pad_position_ids


def hf_model(model: torch.nn.Module) -> PreTrainedModel:
    """The Hugging Face model inside a peft wrapper (adapters stay injected), or ``model`` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def lm_head_fp32(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits in float32 from hidden states: (..., h) -> (..., v), computed outside autocast."""
    return head_fp32(hf_model(model).get_output_embeddings(), hidden)


def head_fp32(head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``head`` (an LM head) applied in float32 outside autocast: (..., h) -> (..., v)."""
    with torch.autocast(hidden.device.type, enabled=False):
        if isinstance(head, torch.nn.Linear):
            bias = head.bias.float() if head.bias is not None else None
            return F.linear(hidden.float(), head.weight.float(), bias)
        return head(hidden.float())


def trunk(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states (b, t, h) of a left-padded batch, with left-padding-aware positions."""
    return hf_model(model).base_model(
        input_ids=input_ids, attention_mask=attention_mask,
        position_ids=left_pad_position_ids(attention_mask), use_cache=False,
    ).last_hidden_state


def response_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int
) -> torch.Tensor:
    """fp32 logits (b, r, v) at the positions that predict the last ``n_response`` tokens of
    ``input_ids`` (b, q + r); the LM head runs on those positions only."""
    hidden = trunk(model, input_ids, attention_mask)[:, -n_response - 1: -1]
    return lm_head_fp32(model, hidden)
