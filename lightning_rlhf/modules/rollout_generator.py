"""The rollout's random stream: one ``torch.Generator`` per rank, checkpointed per rank."""

from __future__ import annotations

import torch

from lightning_rlhf.distributed import gather_objects, this_ranks


class RolloutGenerator:
    """Draws every rollout (sampling, response lengths, dynamic sampling's refills) on rank r from a
    generator seeded ``seed + r``. A checkpoint keeps every rank's state (rank 0 writes it, so the
    states are gathered); after loading, each rank's state is set when the generator is next used,
    on whatever device the module is by then, so a resumed run draws what the straight run drew.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.generator: torch.Generator | None = None
        self._pending: torch.Tensor | None = None

    def get(self, device: torch.device, rank: int) -> torch.Generator:
        """This rank's generator on ``device`` (made, or moved by re-seeding, on first use there)."""
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self.seed + rank)
        if self._pending is not None:
            self.generator.set_state(self._pending.cpu())
            self._pending = None
        return self.generator

    def state(self, device: torch.device, rank: int) -> list[torch.Tensor]:
        """Every rank's generator state, in rank order (a collective under DDP: call it on all ranks)."""
        return gather_objects(self.get(device, rank).get_state())

    def load(self, states: list[torch.Tensor]) -> None:
        """Restore this rank's state from ``state``'s list at the next ``get``."""
        self._pending = this_ranks(states)
