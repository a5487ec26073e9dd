"""Response masks: what counts as a response token, and where the score goes."""

from __future__ import annotations

import torch


def response_mask_after_stop(
    responses: torch.Tensor,
    eos_token_id: int | None,
    max_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """1 up to and including the first EOS (and within ``max_lengths``), 0 after it.

    Args:
        responses: (b, r) generated token ids.
        eos_token_id: stop token; None keeps every token.
        max_lengths: optional (b,) per-sample response lengths (for length ranges).
    Returns:
        (b, r) long mask; every row keeps at least its first token.
    """
    b, r = responses.shape
    steps = torch.arange(r, device=responses.device).expand(b, r)
    mask = torch.ones_like(responses, dtype=torch.long)
    if eos_token_id is not None:
        is_eos = responses == eos_token_id
        never = torch.full((b,), r, dtype=torch.long, device=responses.device)
        first = torch.where(is_eos.any(-1), is_eos.long().argmax(-1), never)
        mask = mask * (steps <= first.unsqueeze(-1)).long()
    if max_lengths is not None:
        mask = mask * (steps < max_lengths.unsqueeze(-1)).long()
    return mask


def last_token_index(response_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real response token per row: (b, r) -> (b,)."""
    return response_mask.sum(-1).clamp(min=1) - 1


def ends_with_eos(
    responses: torch.Tensor, response_mask: torch.Tensor, eos_token_id: int | None
) -> torch.Tensor:
    """Whether each response's last real token is EOS: (b,) bool."""
    if eos_token_id is None:
        return torch.zeros(responses.shape[0], dtype=torch.bool, device=responses.device)
    last = responses.gather(-1, last_token_index(response_mask).unsqueeze(-1)).squeeze(-1)
    return last == eos_token_id


def missing_eos(
    responses: torch.Tensor, response_mask: torch.Tensor, eos_token_id: int | None, max_tokens: int
) -> torch.Tensor:
    """Rows that ran to ``max_tokens`` without EOS: (b,) bool; the rows ``missing_eos_penalty`` hits.

    A row cut shorter by a drawn length (``response_min_tokens < response_max_tokens``) is not
    missing its EOS: the draw, not the policy, ended it.
    """
    if eos_token_id is None:
        return torch.zeros(responses.shape[0], dtype=torch.bool, device=responses.device)
    ran_out = response_mask.sum(-1) >= max_tokens
    return ran_out & ~ends_with_eos(responses, response_mask, eos_token_id)
