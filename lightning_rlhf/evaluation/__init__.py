"""Before/after evaluation of policies: figures, samples and a report."""

from lightning_rlhf.evaluation.evaluate import evaluate_policies
from lightning_rlhf.evaluation.metrics import distinct_n, mean_ci95

__all__ = ["distinct_n", "evaluate_policies", "mean_ci95"]
