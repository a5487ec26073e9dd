"""Collectives that are no-ops without a process group, for decisions every rank must share."""

from __future__ import annotations

import torch
import torch.distributed as dist


def _group_running() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_ranks_true(ok: bool, device: torch.device) -> bool:
    """True only if ``ok`` holds on every process, so all ranks skip or step together."""
    if not _group_running():
        return ok
    flag = torch.tensor(float(ok), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over all elements on all processes."""
    total = torch.stack([x.sum().float(), torch.tensor(float(x.numel()), device=x.device)])
    if _group_running():
        dist.all_reduce(total)
    return total[0] / total[1]


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of the tensor ``x`` over all processes (``x`` itself without a process group)."""
    if not _group_running():
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


def world_size() -> int:
    """Number of processes in the running group (1 without one)."""
    return dist.get_world_size() if _group_running() else 1


def gather_flat(x: torch.Tensor) -> torch.Tensor:
    """All processes' ``x`` (same shape on every rank) concatenated into one 1-D tensor."""
    if not _group_running():
        return x.reshape(-1)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts).reshape(-1)
