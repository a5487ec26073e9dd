"""Step 5 of a PPO iteration: the clipped updates, with Lightning's manual optimization."""

from __future__ import annotations

import contextlib

import lightning as L
import torch

from lightning_rlhf.distributed import all_ranks_true, global_sum, world_size
from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.aggregation import global_counts, token_weights
from lightning_rlhf.rl.logprobs import logprobs_and_entropy
from lightning_rlhf.rl.losses import PPOLoss, imitation_loss, ppo_loss
from lightning_rlhf.rl.rollout import Rollout

POLICY_STATS = {"loss/total": lambda o: o.loss, "loss/policy": lambda o: o.policy.loss,
                "policy/entropy": lambda o: o.entropy, "policy/clipfrac": lambda o: o.policy.clip_frac,
                "policy/approxkl": lambda o: o.policy.approx_kl}
VALUE_STATS = {"loss/value": lambda o: o.value.loss, "value/clipfrac": lambda o: o.value.clip_frac}
KL_LOSS_STATS = {"loss/kl": lambda o: o.kl}
SFT_STAT = "loss/sft"


def policy_outputs(module: L.LightningModule, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs, entropies and values (each (b, r); values None without a value head) of
    ``responses`` under the current policy."""
    hp = module.hparams
    logits, values = module.policy(input_ids, attention_mask, responses.shape[1])
    logprobs, entropy = logprobs_and_entropy(logits, responses, hp.temperature, hp.entropy_coef > 0)
    return logprobs, entropy, values


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


def backward_sync_blocked(module: L.LightningModule) -> contextlib.AbstractContextManager:
    """Under DDP, a context in which backward passes accumulate gradients locally without
    all-reducing them (``DistributedDataParallel.no_sync``); a no-op under other strategies.
    The micro-batch that ends a mini-batch runs outside it and all-reduces the accumulated sum."""
    block = getattr(module.trainer.strategy, "block_backward_sync", None)
    return block() if block is not None else contextlib.nullcontext()


def ppo_update(module: L.LightningModule, ro: Rollout,
               first: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
               ) -> dict[str, torch.Tensor]:
    """``ppo_epochs`` x shuffled mini-batches x gradient-accumulated micro-batches.

    Every loss is aggregated over the whole mini-batch on all ranks (``rl.aggregation``), so
    ``micro_batch_size`` and the number of processes change memory, not the update; under DDP
    only the last micro-batch of a mini-batch all-reduces gradients. ``first``
    is the rollout's ``policy_outputs`` with its graph; when given, the first mini-batch (the
    whole batch) uses it instead of a new forward. A mini-batch whose loss is not finite, or
    whose mean policy/old ratio exceeds ``ratio_threshold``, is skipped (no optimizer step) and
    counted; every rank agrees on skips. The value loss is there only with a value head
    (``ro.values``), the KL loss only with ``module.loss_kl_coef`` > 0. With demos (``ro.demos``,
    BOND's forward term) the loss is ``jeffreys_beta * PPO loss + (1 - jeffreys_beta) * NLL of
    the demos``, the NLL a token mean over the mini-batch's demo tokens on all ranks.

    Returns:
        Statistics of the applied updates only: the mean over their mini-batches
        (``policy/ratio_max`` is the max). Empty when every mini-batch was skipped.
    """
    hp, device = module.hparams, module.device
    opt, sched = module.optimizers(), module.lr_schedulers()
    b = ro.responses.shape[0]
    check_batch_division(b, hp.num_mini_batches, hp.micro_batch_size)
    mini = b // hp.num_mini_batches
    micro = hp.micro_batch_size or mini
    world = world_size()
    input_ids, attention_mask = ro.input_ids(), ro.attention_mask()
    kl_loss_coef = module.loss_kl_coef
    recorded = POLICY_STATS | (VALUE_STATS if ro.values is not None else {}) | (
        KL_LOSS_STATS if kl_loss_coef > 0 else {})
    demos = ro.demos is not None
    records: dict[str, list[torch.Tensor]] = {k: [] for k in (*recorded, "policy/ratio_max")}
    if demos:
        records[SFT_STAT] = []
        demo_ids, demo_attention = ro.demo_input_ids(), ro.demo_attention_mask()
    any_step = False
    for epoch in range(hp.ppo_epochs):
        order = torch.randperm(b, device=device, generator=module._generator())
        for start in range(0, b, mini):
            reuse = first is not None and epoch == 0 and start == 0
            mb = torch.arange(b, device=device) if reuse else order[start: start + mini]
            tokens, sequences = global_counts(ro.response_mask[mb])
            demo_tokens = global_counts(ro.demo_mask[mb])[0] if demos else 0.0
            opt.zero_grad()
            sums = {k: torch.zeros((), device=device) for k in (*recorded, *([SFT_STAT] if demos else []))}
            ratio_sum, ratio_max, finite = torch.zeros((), device=device), [], True
            for m0 in range(0, len(mb), micro):
                idx = mb[m0: m0 + micro]
                weights = token_weights(ro.response_mask[idx], hp.loss_aggregation, tokens, sequences,
                                        hp.response_max_tokens, scale=world)
                logprobs, entropy, vpred = first if reuse else policy_outputs(
                    module, input_ids[idx], attention_mask[idx], ro.responses[idx])
                out: PPOLoss = ppo_loss(
                    logprobs, entropy, vpred, ro.logprobs[idx], None if ro.values is None else ro.values[idx],
                    ro.advantages[idx], ro.returns[idx], ro.response_mask[idx],
                    hp.cliprange, hp.cliprange_value, hp.vf_coef, hp.entropy_coef, weights,
                    ro.ref_logprobs[idx], kl_loss_coef)
                loss = out.loss
                if demos:
                    demo_weights = token_weights(ro.demo_mask[idx], "token_mean", demo_tokens, sequences, scale=world)
                    demo_logprobs = policy_outputs(module, demo_ids[idx], demo_attention[idx], ro.demos[idx])[0]
                    sft = imitation_loss(demo_logprobs, demo_weights)
                    loss = hp.jeffreys_beta * loss + (1 - hp.jeffreys_beta) * sft
                    sums[SFT_STAT] = sums[SFT_STAT] + sft.detach()
                finite = all_ranks_true(bool(torch.isfinite(loss)), device)
                if not finite:
                    break
                last_micro = m0 + micro >= len(mb)
                with contextlib.nullcontext() if last_micro else backward_sync_blocked(module):
                    module.manual_backward(loss)
                ratio_sum = ratio_sum + out.policy.ratio_mean.detach() / world
                ratio_max.append(out.policy.ratio_max.detach())
                for key, get in recorded.items():
                    sums[key] = sums[key] + get(out).detach()
            if not finite:
                opt.zero_grad()
                module.guard.bad(module.global_step, "non-finite PPO loss")
                continue
            if not all_ranks_true(bool(global_sum(ratio_sum) <= hp.ratio_threshold), device):
                opt.zero_grad()
                module.ratio_skips += 1
                continue
            opt.step()
            any_step = True
            if sched is not None:
                sched.step()
            for key, value in sums.items():
                records[key].append(value)
            records["policy/ratio_max"].append(torch.stack(ratio_max).max())
    if any_step:
        module.guard.good()
    stats = {k: torch.stack(v).mean() for k, v in records.items() if v}
    if records["policy/ratio_max"]:
        stats["policy/ratio_max"] = torch.stack(records["policy/ratio_max"]).max()
    return stats
