"""Shift and scale scores by statistics measured on samples of the initial policy."""

from __future__ import annotations

import torch


class ScoreNormalizer(torch.nn.Module):
    """``(score - shift) / scale``, then optional clipping to ``[-clip, clip]``.

    Fitted once on scores of the initial policy (N-details R1-R3); the statistics are buffers,
    so they are saved with the run's checkpoint and restored on resume.
    """

    def __init__(self, enabled: bool = False, clip: float | None = None) -> None:
        super().__init__()
        self.enabled = enabled
        self.clip = clip
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, scores: torch.Tensor) -> None:
        """scores: (n,) scores of the initial policy, gathered over all ranks."""
        self.shift.copy_(scores.mean())
        self.scale.copy_(scores.std().clamp(min=1e-6))
        self.fitted.fill_(True)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            scores = (scores - self.shift) / self.scale
        if self.clip is not None:
            scores = scores.clamp(-self.clip, self.clip)
        return scores
