"""Step 5 of a policy-gradient iteration: the clipped updates over a rollout.

No Trainer: the optimizer, the backward call and the DDP no-sync context are arguments
(``Optimization``), so a plain loop can drive it as well as Lightning's manual optimization.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lightning_rlhf.distributed import all_ranks_true, global_sum, world_size
from lightning_rlhf.engine.config import EngineConfig
from lightning_rlhf.errors import ConfigError
from lightning_rlhf.guard import NonFiniteGuard
from lightning_rlhf.models.value_head import PolicyWithValueHead, policy_outputs
from lightning_rlhf.rl.aggregation import global_counts, token_weights
from lightning_rlhf.rl.losses import PPOLoss, imitation_loss, ppo_loss
from lightning_rlhf.rl.rollout import Rollout
from lightning_rlhf.rl.rollout_correction import RolloutCorrection, rollout_correction_weights

POLICY_STATS = {"loss/total": lambda o: o.loss, "loss/policy": lambda o: o.policy.loss,
                "policy/entropy": lambda o: o.entropy, "policy/clipfrac": lambda o: o.policy.clip_frac,
                "policy/approxkl": lambda o: o.policy.approx_kl}
VALUE_STATS = {"loss/value": lambda o: o.value.loss, "value/clipfrac": lambda o: o.value.clip_frac}
KL_LOSS_STATS = {"loss/kl": lambda o: o.kl}
SFT_STAT = "loss/sft"


@dataclass
class Optimization:
    """How the update steps: the optimizer, its scheduler, the backward call and, under DDP, a
    context in which a backward accumulates without all-reducing (``no_sync``)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@dataclass
class UpdateResult:
    """Statistics of the applied updates (mean over their mini-batches, ``policy/ratio_max`` the
    max; empty when every mini-batch was skipped) and what was skipped."""

    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    ratio_skips: int = 0


def check_batch_division(batch_size: int, num_mini_batches: int, micro_batch_size: int | None) -> None:
    """Refuse a rollout batch that mini-batches (and micro-batches) do not cut into equal parts.

    An uneven cut would add a short extra optimizer step and run the LR schedule, which counts
    ``ppo_epochs * num_mini_batches`` steps per iteration, out early.
    """
    if num_mini_batches < 1 or batch_size % num_mini_batches:
        raise ConfigError(f"num_mini_batches ({num_mini_batches}) does not divide the batch size ({batch_size}); "
                          f"choose a batch size that is a multiple of it")
    mini = batch_size // num_mini_batches
    if micro_batch_size is not None and (micro_batch_size < 1 or mini % micro_batch_size):
        raise ConfigError(f"micro_batch_size ({micro_batch_size}) does not divide the mini-batch of {mini} rows "
                          f"(batch size {batch_size} / num_mini_batches {num_mini_batches}); "
                          f"choose a divisor of {mini}")


def ppo_update(policy: PolicyWithValueHead, ro: Rollout, cfg: EngineConfig, optim: Optimization,
               gen: torch.Generator, guard: NonFiniteGuard, step: int, kl_loss_coef: float = 0.0,
               first: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None) -> UpdateResult:
    """``ppo_epochs`` x shuffled mini-batches x gradient-accumulated micro-batches.

    Every loss is aggregated over the whole mini-batch on all ranks (``rl.aggregation``), so
    ``micro_batch_size`` and the number of processes change memory, not the update; under DDP
    only the last micro-batch of a mini-batch all-reduces gradients. ``first`` is the rollout's
    ``policy_outputs`` with its graph; when given, the first mini-batch (the whole batch) uses it
    instead of a new forward. A mini-batch whose loss is not finite (``guard.bad``, at optimizer
    step ``step`` plus the steps taken) or whose mean policy/old ratio exceeds
    ``ratio_threshold`` is skipped (no optimizer step) and counted; every rank agrees on skips.
    The value loss is there only with a value head (``ro.values``), the KL loss only with
    ``kl_loss_coef`` > 0. With demos (``ro.demos``, BOND's forward term) the loss is
    ``jeffreys_beta * PPO loss + (1 - jeffreys_beta) * NLL of the demos``, the NLL a token mean
    over the mini-batch's demo tokens on all ranks. With ``rollout_correction`` the policy term
    of each token is weighted by the truncated ratio of the trainer's to the sampler's log-prob.
    """
    u, temperature, beta = cfg.update, cfg.sampling.temperature, cfg.reward.jeffreys_beta
    device = ro.responses.device
    b = ro.responses.shape[0]
    check_batch_division(b, u.num_mini_batches, u.micro_batch_size)
    mini = b // u.num_mini_batches
    micro = u.micro_batch_size or mini
    world = world_size()
    input_ids, attention_mask = ro.input_ids(), ro.attention_mask()
    recorded = POLICY_STATS | (VALUE_STATS if ro.values is not None else {}) | (
        KL_LOSS_STATS if kl_loss_coef > 0 else {})
    demos = ro.demos is not None
    correction = rollout_correction(ro, cfg)
    records: dict[str, list[torch.Tensor]] = {k: [] for k in (*recorded, "policy/ratio_max")}
    if demos:
        records[SFT_STAT] = []
        demo_ids, demo_attention = ro.demo_input_ids(), ro.demo_attention_mask()
    result = UpdateResult()

    def forward(ids: torch.Tensor, mask: torch.Tensor, responses: torch.Tensor):
        return policy_outputs(policy, ids, mask, responses, temperature, u.entropy_coef > 0)

    for epoch in range(u.ppo_epochs):
        order = torch.randperm(b, device=device, generator=gen)
        for start in range(0, b, mini):
            reuse = first is not None and epoch == 0 and start == 0
            mb = torch.arange(b, device=device) if reuse else order[start: start + mini]
            tokens, sequences = global_counts(ro.response_mask[mb])
            demo_tokens = global_counts(ro.demo_mask[mb])[0] if demos else 0.0
            optim.optimizer.zero_grad()
            sums = {k: torch.zeros((), device=device) for k in (*recorded, *([SFT_STAT] if demos else []))}
            ratio_sum, ratio_max, finite = torch.zeros((), device=device), [], True
            for m0 in range(0, len(mb), micro):
                idx = mb[m0: m0 + micro]
                weights = token_weights(ro.response_mask[idx], u.loss_aggregation, tokens, sequences,
                                        cfg.sampling.response_max_tokens, scale=world)
                logprobs, entropy, vpred = first if reuse else forward(
                    input_ids[idx], attention_mask[idx], ro.responses[idx])
                out: PPOLoss = ppo_loss(
                    logprobs, entropy, vpred, ro.logprobs[idx], None if ro.values is None else ro.values[idx],
                    ro.advantages[idx], ro.returns[idx], ro.response_mask[idx],
                    u.cliprange, u.cliprange_value, u.vf_coef, u.entropy_coef, weights,
                    ro.ref_logprobs[idx], kl_loss_coef, u.cliprange_high, u.importance_sampling_level,
                    None if correction is None else correction.weights[idx])
                loss = out.loss
                if demos:
                    demo_weights = token_weights(ro.demo_mask[idx], "token_mean", demo_tokens, sequences, scale=world)
                    sft = imitation_loss(forward(demo_ids[idx], demo_attention[idx], ro.demos[idx])[0], demo_weights)
                    loss = beta * loss + (1 - beta) * sft
                    sums[SFT_STAT] = sums[SFT_STAT] + sft.detach()
                finite = all_ranks_true(bool(torch.isfinite(loss)), device)
                if not finite:
                    break
                last_micro = m0 + micro >= len(mb)
                with contextlib.nullcontext() if last_micro else optim.no_sync():
                    optim.backward(loss)
                ratio_sum = ratio_sum + out.policy.ratio_mean.detach() / world
                ratio_max.append(out.policy.ratio_max.detach())
                for key, get in recorded.items():
                    sums[key] = sums[key] + get(out).detach()
            if not finite:
                optim.optimizer.zero_grad()
                guard.bad(step + result.steps, "non-finite PPO loss")
                continue
            if not all_ranks_true(bool(global_sum(ratio_sum) <= u.ratio_threshold), device):
                optim.optimizer.zero_grad()
                result.ratio_skips += 1
                continue
            optim.optimizer.step()
            result.steps += 1
            if optim.scheduler is not None:
                optim.scheduler.step()
            for key, value in sums.items():
                records[key].append(value)
            records["policy/ratio_max"].append(torch.stack(ratio_max).max())
    if result.steps:
        guard.good()
    result.stats = {k: torch.stack(v).mean() for k, v in records.items() if v}
    if records["policy/ratio_max"]:
        result.stats["policy/ratio_max"] = torch.stack(records["policy/ratio_max"]).max()
    if correction is not None:
        result.stats |= {"rollout_correction/ratio_mean": correction.ratio_mean,
                         "rollout_correction/ratio_max": correction.ratio_max,
                         "rollout_correction/frac_truncated": correction.frac_truncated,
                         "rollout_correction/frac_masked": correction.frac_masked}
    return result


def rollout_correction(ro: Rollout, cfg: EngineConfig) -> RolloutCorrection | None:
    """The truncated sampler/trainer importance weights of the whole rollout (constants, so one
    call serves every epoch), or None when the correction is off."""
    u = cfg.update
    if u.rollout_correction == "none":
        return None
    if ro.sampler_logprobs is None:
        raise ConfigError("rollout_correction needs the sampler's log-probs in the rollout (Rollout.sampler_logprobs)")
    return rollout_correction_weights(ro.logprobs, ro.sampler_logprobs, ro.response_mask, u.rollout_correction,
                                      u.rollout_correction_cap)
