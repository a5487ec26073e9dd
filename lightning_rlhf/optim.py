"""AdamW with linear warmup and a cosine, linear or constant decay, shared by every stage."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch

Schedule = Literal["cosine", "linear", "constant"]


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: Schedule) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw_with_schedule(
    param_groups: Iterable,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    schedule: Schedule,
    eps: float = 1e-8,
) -> dict:
    """Lightning ``configure_optimizers`` dict: AdamW plus a per-step ``LambdaLR``."""
    optimizer = torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, eps=eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, schedule)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def decay_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; biases and norms are left alone (as in nanoGPT). Without
    decay, one group in the module's order: two would change nothing but the order in which the
    gradient-norm clip sums, and so the last bits of earlier runs."""
    params = [p for p in module.parameters() if p.requires_grad]
    if weight_decay == 0:
        return [{"params": params, "weight_decay": 0.0}]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def configure_adamw(module, model: torch.nn.Module, steps_per_batch: int = 1) -> dict:
    """``configure_optimizers`` for a module with ``learning_rate``, ``weight_decay``,
    ``warmup_steps`` and ``lr_schedule`` (and optionally ``adam_eps``) hyperparameters, scheduled
    over the whole fit. A module that steps its optimizer itself (PPO: ``steps_per_batch``
    optimizer steps per training batch) is scheduled over ``max_steps`` where set, since its
    ``global_step`` counts optimizer steps, else over every batch's steps."""
    hp, trainer = module.hparams, module.trainer
    manual = not module.automatic_optimization and trainer.max_steps > 0
    total = trainer.max_steps if manual else int(trainer.estimated_stepping_batches) * steps_per_batch
    return adamw_with_schedule(decay_groups(model, hp.weight_decay), hp.learning_rate, hp.weight_decay,
                               hp.warmup_steps, total, hp.lr_schedule, eps=hp.get("adam_eps", 1e-8))
