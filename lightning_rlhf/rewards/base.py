"""The reward protocol, user reward functions by import path, and their validation."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from lightning_rlhf.errors import ConfigError, InputImportError, InputTypeError


class RewardFunction(Protocol):
    """Scores decoded samples: ``reward(prompts, responses) -> (b,)`` float tensor."""

    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor | Sequence[float]: ...


def import_reward_function(path: str) -> Callable:
    """Resolve ``package.module:function`` (or ``package.module.function``)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"reward function '{path}' is not an import path like 'my_pkg.rewards:score'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputImportError(
            f"cannot import module '{module_name}' of reward function '{path}': {err}. "
            f"Is the package installed or on PYTHONPATH?"
        ) from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputImportError(f"'{module_name}' has no callable '{attr}' (reward function '{path}')")
    return fn


class ValidatedReward:
    """Wrap a reward callable and check its results: one float per sample, finite.

    A wrong shape always raises. A NaN or inf on the first call raises too (the function is
    broken); later, non-finite scores pass through to the trainer's non-finite guard, which
    skips that step and stops after several in a row.
    """

    def __init__(self, fn: Callable, name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", type(fn).__name__)
        self.validated = False

    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.check(self.fn(prompts, responses), prompts, responses)

    def check(self, out, prompts: list[str] | None = None, responses: list[str] | None = None) -> torch.Tensor:
        """Validate scores ``out`` computed for ``len(prompts)`` samples (or for ids, without texts)."""
        n = len(prompts) if prompts is not None else len(out)
        try:
            scores = torch.as_tensor(out, dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise InputTypeError(
                f"reward function '{self.name}' returned {type(out).__name__}; return a float "
                f"tensor or list with one score per sample"
            ) from err
        if scores.shape != (n,):
            raise ConfigError(
                f"reward function '{self.name}' returned shape {tuple(scores.shape)} for "
                f"{n} samples; it must return one score per sample, shape ({n},)"
            )
        if self.validated:  # later non-finite scores are the trainer's guard's job
            return scores
        bad = ~torch.isfinite(scores)
        if bad.any():
            i = int(bad.nonzero()[0])
            where = f": prompt={prompts[i]!r} response={responses[i]!r}" if prompts is not None else ""
            raise ConfigError(
                f"reward function '{self.name}' returned a non-finite score ({scores[i].item()}) for "
                f"sample {i}{where}"
            )
        self.validated = True
        return scores


def build_reward(
    reward_model: str | None, reward_fn: str | None, positive_label: str = "POSITIVE",
    output: str = "logit", batch_size: int = 64,
) -> tuple[torch.nn.Module | None, ValidatedReward]:
    """The reward classifier module (None for a function) and the validated callable to score with."""
    if reward_model is not None:
        from lightning_rlhf.rewards.sentiment import SentimentClassifierReward

        module = SentimentClassifierReward(reward_model, positive_label, output, batch_size)
        return module, ValidatedReward(module, name=f"classifier '{reward_model}'")
    return None, ValidatedReward(import_reward_function(reward_fn), name=reward_fn)
