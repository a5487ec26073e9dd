"""J-BOND's moving anchor: an exponential moving average of the policy's weights."""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def ema_update_(anchor: Iterable[torch.Tensor], policy: Iterable[torch.Tensor], eta: float) -> None:
    """``θ_a ← (1 − η) θ_a + η θ`` in place, tensor by tensor (Sessa et al. 2024, Alg. 2).

    A small η makes the anchor trail the policy, so each Best-of-2 step is taken against a
    slowly improving sampler and t steps compose towards Best-of-2^t; η = 1 copies the policy.

    Args:
        anchor, policy: matching sequences of tensors (e.g. ``model.parameters()``).
    """
    anchor, policy = list(anchor), list(policy)
    if len(anchor) != len(policy):
        raise ValueError(f"the anchor has {len(anchor)} tensors, the policy {len(policy)}")
    for a, p in zip(anchor, policy, strict=True):
        a.lerp_(p.to(a.dtype), eta)
