"""A data loader that resumes mid-epoch at the exact batch where a checkpoint was taken.

Lightning restores loop counters but restarts a plain ``DataLoader`` at the top of its epoch,
so a resumed run would see other batches than an uninterrupted one. This loader implements
Lightning's ``state_dict``/``load_state_dict`` protocol: its state is the data epoch and the
number of batches the training loop consumed, and after loading it skips exactly those indices.

The data epoch is the loader's own count of passes, not Lightning's epoch counter: a run that
stops at ``max_steps`` mid-epoch is recorded by Lightning as a finished epoch, so extending it
(``max_steps`` 10 -> 20 with ``--ckpt_path``) would otherwise reshuffle and read other batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


class EpochShuffleSampler(DistributedSampler):
    """Seeded per-epoch shuffle, sharded by rank, that can start part-way into an epoch.

    A ``DistributedSampler`` subclass, so Lightning keeps it under DDP instead of replacing it;
    each rank draws a disjoint shard of the same seeded permutation. ``epoch`` counts the passes
    begun over the data; Lightning's ``set_epoch`` calls are ignored (see the module docstring).
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.passes = 0
        self.resume_at: tuple[int, int] | None = None  # (epoch, first index) of a loaded state

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the data epoch advances with each pass, whatever Lightning's counter says."""

    def __iter__(self) -> Iterator[int]:
        start = 0
        if self.resume_at is not None:
            self.epoch, start = self.resume_at
            self.resume_at = None
        else:
            self.epoch = self.passes
        self.passes = self.epoch + 1
        return iter(list(super().__iter__())[start:])


class ResumableDataLoader(DataLoader):
    """``DataLoader`` over an ``EpochShuffleSampler`` with Lightning's stateful-loader protocol.

    ``consumed`` is a callable returning how many batches of the current epoch the training loop
    has finished (the data fetcher prefetches, so counting yielded batches would be off by one).
    """

    def __init__(self, *args: Any, consumed: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumed = consumed

    def state_dict(self) -> dict[str, int]:
        done = self.consumed() if self.consumed is not None else 0
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if isinstance(self.sampler, EpochShuffleSampler):
            self.sampler.resume_at = (state["epoch"], state["batches"] * (self.batch_size or 1))
