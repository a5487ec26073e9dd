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


def left_to_right_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the front: ``[p p a b c p] -> [a b c p p p]``.

    Rows must be padding, then one contiguous run of real tokens, then padding (a left-padded
    query followed by a response masked after its stop). Encoder classifiers expect this layout.

    Args:
        input_ids, attention_mask: (b, t).
    Returns:
        ids and mask of shape (b, t), right-padded.
    """
    t = input_ids.shape[1]
    leading = (attention_mask.cumsum(-1) == 0).sum(-1, keepdim=True)
    index = torch.arange(t, device=input_ids.device).unsqueeze(0) + leading
    inside = index < t
    index = index.clamp(max=t - 1)
    mask = attention_mask.gather(1, index) * inside
    ids = input_ids.gather(1, index).masked_fill(mask == 0, pad_token_id)
    return ids, mask
