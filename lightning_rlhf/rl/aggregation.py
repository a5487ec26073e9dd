"""Loss aggregation: per-token weights that make the gradient independent of how a batch is cut.

A mini-batch is split into micro-batches (gradient accumulation) and across processes (DDP
averages gradients over ranks). Taking each piece's own token mean and averaging the pieces
weights the tokens of short pieces more, so the update would depend on ``micro_batch_size``
and on the number of processes. Instead every token gets a weight computed from the whole
mini-batch on all ranks, and each piece's loss is the weighted sum of its token losses.

``token_mean`` is PPO's default (TRL, OpenRLHF); ``seq_mean_token_mean`` averages each
sequence's token mean (the original GRPO); ``seq_mean_token_sum_norm`` sums each sequence's
tokens and divides by a constant, the longest allowed response (Dr. GRPO, arXiv:2503.20783).
``local_token_mean`` is the token mean of each piece (micro-batch on one rank), the pieces
weighted by their share of the mini-batch's sequences: TRL's ``bnpo``, the only aggregation here
whose gradient depends on the cut (see ``LOSS_TYPE_AGGREGATION``).

TRL's ``GRPOConfig.loss_type`` names map onto these (``aggregation_for_loss_type``); with
P pieces of one mini-batch (gradient-accumulation steps x processes), L the per-token loss,
m the response mask, |o_i| a response's tokens, B the sequences and N the tokens of the
mini-batch, b_p and N_p those of piece p, T ``max_completion_length``:

| TRL ``loss_type`` | TRL's loss (DDP averages it over processes) | here |
|---|---|---|
| ``grpo`` | mean over pieces of ``mean_i(sum_t m L / |o_i|)`` | ``seq_mean_token_mean``: ``sum_i(...) / B`` |
| ``dr_grpo`` | mean over pieces of ``sum(m L) / (b_p T)`` | ``seq_mean_token_sum_norm``: ``sum(m L) / (B T)`` |
| ``dapo`` | ``sum(m L) / N``, N all ranks' and accumulation steps' tokens | ``token_mean`` (the same) |
| ``bnpo`` | mean over pieces p of ``sum_p(m L) / N_p`` | ``local_token_mean`` |

``grpo`` and ``dr_grpo`` equal TRL's whenever the pieces hold the same number of sequences (TRL's
always do) and, unlike TRL's, stay the same for unequal pieces. ``dapo`` is TRL's at any cut.
``bnpo`` normalises by each piece's own tokens, so no cut-independent form of it exists: ours is
``sum_p (b_p / B) sum_p(m L) / N_p``, TRL's for equal pieces, and equals ``dapo`` only when
the mini-batch is one piece (one process, no accumulation). Prefer ``dapo``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist

from lightning_rlhf.errors import ConfigError

Aggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm", "local_token_mean"]
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm", "local_token_mean")

LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo"]
LOSS_TYPE_AGGREGATION = {"grpo": "seq_mean_token_mean", "dr_grpo": "seq_mean_token_sum_norm",
                         "dapo": "token_mean", "bnpo": "local_token_mean"}  # TRL's GRPOConfig.loss_type


DEFAULT_AGGREGATION = {"dr_grpo": "seq_mean_token_sum_norm"}


def resolve_aggregation(estimator: str, aggregation: str | None) -> str:
    """The aggregation asked for, else the estimator's own (``dr_grpo``: the constant divisor of
    Dr. GRPO; every other estimator: ``token_mean``)."""
    return DEFAULT_AGGREGATION.get(estimator, "token_mean") if aggregation is None else aggregation


def aggregation_for_loss_type(loss_type: str) -> str:
    """The aggregation of a TRL ``GRPOConfig.loss_type`` (module docstring's table): ``grpo`` ->
    ``seq_mean_token_mean``, ``dr_grpo`` -> ``seq_mean_token_sum_norm``, ``dapo`` ->
    ``token_mean``, ``bnpo`` -> ``local_token_mean``. Pass the answer to ``token_weights``."""
    if loss_type not in LOSS_TYPE_AGGREGATION:
        raise ConfigError(f"loss_type must be one of {', '.join(LOSS_TYPE_AGGREGATION)}, not '{loss_type}'")
    return LOSS_TYPE_AGGREGATION[loss_type]


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
        response_mask: (b, r) mask of the rows of one micro-batch (for ``local_token_mean``:
            the whole piece whose tokens normalise it, as TRL's micro-batch).
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
    elif aggregation == "local_token_mean":
        weights = mask / mask.sum().clamp(min=1) * (mask.shape[0] / max(total_sequences, 1.0))
    else:
        raise ConfigError(f"loss aggregation must be one of {', '.join(AGGREGATIONS)}, not '{aggregation}'")
    return weights * scale


def aggregate(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of per-token values: (b, r), (b, r) -> scalar."""
    return (x * weights).sum()
