"""Per-token KL estimators and KL-coefficient controllers."""

from __future__ import annotations

from typing import Literal

import torch

from lightning_rlhf.errors import ConfigError

KLEstimator = Literal["k1", "k3"]


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1"
) -> torch.Tensor:
    """Sampled per-token estimate of KL(policy || reference) (Schulman, "Approximating KL").

    k1 = log p - log q is unbiased but can be negative per token; k3 = (r - 1) - log r with
    r = q / p is unbiased and never negative.

    Args:
        logprobs, ref_logprobs: (b, r) log-probs of the sampled tokens under policy and reference.
    Returns:
        (b, r) per-token estimates (unmasked).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ConfigError(f"unknown KL estimator '{estimator}'; use k1 or k3")


class FixedKLController:
    """Constant ``kl_coef``."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Proportional controller of Ziegler et al. 2019 (arXiv:1909.08593, eq. 2).

    ``e = clip(KL / target - 1, -0.2, 0.2)``; ``kl_coef *= 1 + e * n_steps / horizon``, where
    ``n_steps`` is the number of samples behind the KL measurement.
    """

    def __init__(self, kl_coef: float, target: float, horizon: int) -> None:
        super().__init__(kl_coef)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
