"""Collectives that are no-ops without a process group, for decisions every rank must share."""

from __future__ import annotations

import torch
import torch.distributed as dist


def group_running() -> bool:
    """Whether a process group of more than one process is running: the one check every
    collective here (and in ``rl/``) makes before it communicates."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_ranks_true(ok: bool, device: torch.device) -> bool:
    """True only if ``ok`` holds on every process, so all ranks skip or step together."""
    if not group_running():
        return ok
    flag = torch.tensor(float(ok), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def any_rank_true(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` holds on any process, so all ranks act together (e.g. stop at one batch)."""
    return not all_ranks_true(not flag, device)


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over all elements on all processes."""
    total = torch.stack([x.sum().float(), torch.tensor(float(x.numel()), device=x.device)])
    if group_running():
        dist.all_reduce(total)
    return total[0] / total[1]


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of the tensor ``x`` over all processes (``x`` itself without a process group)."""
    if not group_running():
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


def world_size() -> int:
    """Number of processes in the running group (1 without one)."""
    return dist.get_world_size() if group_running() else 1


def gather_flat(x: torch.Tensor) -> torch.Tensor:
    """All processes' ``x`` (same shape on every rank) concatenated into one 1-D tensor."""
    if not group_running():
        return x.reshape(-1)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts).reshape(-1)


def rank() -> int:
    """This process's rank in the running group (0 without one)."""
    return dist.get_rank() if group_running() else 0


def gather_objects(obj: object) -> list:
    """Every process's ``obj`` in rank order (``[obj]`` without a process group).

    Per-rank state such as each rank's sampling generator must go into the checkpoint, which
    rank 0 alone writes: saving rank 0's copy would give every rank rank 0's stream on resume.
    A collective: call it on every rank (checkpoint hooks run on all of them)."""
    if not group_running():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def this_ranks(saved: list | object) -> object | None:
    """This rank's entry of a list ``gather_objects`` saved; None when the run has more processes
    than the saving run had (that rank starts a fresh stream). A bare object (a checkpoint from
    before the per-rank lists) is rank 0's and is returned to rank 0 only."""
    saved = saved if isinstance(saved, list) else [saved]
    index = rank()
    return saved[index] if index < len(saved) else None
