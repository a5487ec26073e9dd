"""Summary statistics of generated text: confidence intervals and diversity."""

from __future__ import annotations

import math


def mean_ci95(values: list[float]) -> tuple[float, float, float]:
    """Mean and the normal-approximation 95% interval ``mean +- 1.96 * s / sqrt(n)``."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = 1.96 * std / math.sqrt(n)
    return mean, mean - half, mean + half


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of whitespace words in ``texts`` (Li et al. 2016)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.split()
        grams.extend(tuple(words[i: i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0
