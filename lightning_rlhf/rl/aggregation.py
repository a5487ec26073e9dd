"""Loss aggregation: per-token weights that make the gradient independent of how a batch is cut.

A mini-batch is split into micro-batches (gradient accumulation) and across processes (DDP
averages gradients over ranks). Taking each piece's own token mean and averaging the pieces
weights the tokens of short pieces more, so the update would depend on ``micro_batch_size``
and on the number of processes. Instead every token gets a weight computed from the whole
mini-batch on all ranks, and each piece's loss is the weighted sum of its token losses.

``token_mean`` is PPO's default (TRL, OpenRLHF); ``seq_mean_token_mean`` averages each
sequence's token mean (the original GRPO); ``seq_mean_token_sum_norm`` sums each sequence's
tokens and divides by a constant, the longest allowed response (Dr. GRPO, arXiv:2503.20783).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist

from lightning_rlhf.errors import ConfigError

Aggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


DEFAULT_AGGREGATION = {"dr_grpo": "seq_mean_token_sum_norm"}


def resolve_aggregation(estimator: str, aggregation: str | None) -> str:
    """The aggregation asked for, else the estimator's own (``dr_grpo``: the constant divisor of
    Dr. GRPO; every other estimator: ``token_mean``)."""
    return DEFAULT_AGGREGATION.get(estimator, "token_mean") if aggregation is None else aggregation


def global_counts(response_mask: torch.Tensor) -> tuple[float, float]:
    """Response tokens and sequences of a mini-batch summed over all processes.

    Args:
        response_mask: (b, r) mask of this rank's share of the mini-batch.
    Returns:
        (tokens, sequences) as floats.
    """
    counts = torch.stack([response_mask.sum().float(),
                          torch.tensor(float(response_mask.shape[0]), device=response_mask.device)])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(counts)
    return float(counts[0]), float(counts[1])


def token_weights(
    response_mask: torch.Tensor,
    aggregation: Aggregation,
    total_tokens: float,
    total_sequences: float,
    max_tokens: int | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Weights (b, r) whose sum over the whole mini-batch on all ranks is ``scale``.

    Args:
        response_mask: (b, r) mask of the rows of one micro-batch.
        aggregation: see the module docstring.
        total_tokens, total_sequences: the mini-batch's counts over all ranks (``global_counts``).
        max_tokens: the constant divisor of ``seq_mean_token_sum_norm`` (the response length cap).
        scale: multiply by the world size under DDP, whose gradient averaging divides by it.
    """
    mask = response_mask.float()
    if aggregation == "token_mean":
        weights = mask / max(total_tokens, 1.0)
    elif aggregation == "seq_mean_token_mean":
        weights = mask / mask.sum(-1, keepdim=True).clamp(min=1) / max(total_sequences, 1.0)
    elif aggregation == "seq_mean_token_sum_norm":
        if not max_tokens:
            raise ConfigError("seq_mean_token_sum_norm needs max_tokens, the constant divisor")
        weights = mask / (max_tokens * max(total_sequences, 1.0))
    else:
        raise ConfigError(f"loss aggregation must be one of {', '.join(AGGREGATIONS)}, not '{aggregation}'")
    return weights * scale


def aggregate(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of per-token values: (b, r), (b, r) -> scalar."""
    return (x * weights).sum()
