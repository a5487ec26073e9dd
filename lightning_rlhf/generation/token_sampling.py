"""Drawing one token per row from fp32 logits: the sampling tail shared by the eager loop
(``generation.eager``) and the compiled decode step (``generation.static_step``), so both give
the same tokens for the same generator state."""

from __future__ import annotations

import torch

from lightning_rlhf.rl.logprobs import logprobs_from_logits


def exponential_noise(shape: tuple[int, int], device: torch.device, generator: torch.Generator | None,
                      greedy: bool) -> torch.Tensor:
    """(b, v) Exp(1) draws: ``argmax(probs / noise)`` is a draw from ``probs``, the very one
    ``torch.multinomial(probs, 1, generator=generator)`` makes from the same state. Ones for greedy."""
    if greedy:
        return torch.ones(shape, device=device)
    return torch.empty(shape, device=device).exponential_(1, generator=generator)


def sample_token(logits: torch.Tensor, noise: torch.Tensor, temperature: float, finished: torch.Tensor,
                 eos_token_id: int | None, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick the next token of each row from fp32 ``logits`` (b, v) and ``noise`` (b, v).

    Returns the tokens (b,) (``pad_token_id`` for rows in ``finished`` (b,)), their log-probs (b,)
    under ``softmax(logits / temperature)`` (0 for finished rows) and the updated ``finished``.
    """
    probs = torch.softmax(logits / temperature, dim=-1)
    token = (probs / noise).argmax(-1)
    logprobs = logprobs_from_logits(logits, token, temperature)
    if eos_token_id is not None:
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        logprobs = logprobs.masked_fill(finished, 0.0)
        finished = finished | (token == eos_token_id)
    return token, logprobs, finished
