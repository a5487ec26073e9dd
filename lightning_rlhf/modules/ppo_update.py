"""Step 5 of a PPO iteration: the clipped updates, with Lightning's manual optimization."""

from __future__ import annotations

import lightning as L
import torch

from lightning_rlhf.distributed import all_ranks_true
from lightning_rlhf.rl.logprobs import logprobs_and_entropy
from lightning_rlhf.rl.losses import PPOLoss, ppo_loss
from lightning_rlhf.rl.rollout import Rollout

RECORDED = {"loss/total": lambda o: o.loss, "loss/policy": lambda o: o.policy.loss,
            "loss/value": lambda o: o.value.loss, "policy/entropy": lambda o: o.entropy,
            "policy/clipfrac": lambda o: o.policy.clip_frac, "policy/approxkl": lambda o: o.policy.approx_kl,
            "policy/ratio_max": lambda o: o.policy.ratio_max, "value/clipfrac": lambda o: o.value.clip_frac}


def policy_outputs(module: L.LightningModule, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs, entropies and values (each (b, r)) of ``responses`` under the current policy."""
    hp = module.hparams
    logits, values = module.policy(input_ids, attention_mask, responses.shape[1])
    logprobs, entropy = logprobs_and_entropy(logits, responses, hp.temperature, hp.entropy_coef > 0)
    return logprobs, entropy, values


def ppo_update(module: L.LightningModule, ro: Rollout,
               first: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``ppo_epochs`` x shuffled mini-batches x gradient-accumulated micro-batches.

    ``first`` is the rollout's ``policy_outputs`` (log-probs, entropies, values) with its graph;
    when given, the first mini-batch (the whole batch) uses it instead of a new forward. A
    mini-batch whose loss is not finite, or whose mean policy/old ratio exceeds
    ``ratio_threshold``, is skipped (no optimizer step) and counted; every rank agrees on skips.

    Returns:
        Mean statistics over all micro-batches (``policy/ratio_max`` is the max).
    """
    hp, device = module.hparams, module.device
    opt, sched = module.optimizers(), module.lr_schedulers()
    b = ro.responses.shape[0]
    mini = max(1, b // hp.num_mini_batches)
    micro = hp.micro_batch_size or mini
    input_ids, attention_mask = ro.input_ids(), ro.attention_mask()
    records: dict[str, list[torch.Tensor]] = {k: [] for k in RECORDED}
    any_step = False
    for epoch in range(hp.ppo_epochs):
        order = torch.randperm(b, device=device, generator=module._generator())
        for start in range(0, b, mini):
            reuse = first is not None and epoch == 0 and start == 0
            mb = torch.arange(b, device=device) if reuse else order[start: start + mini]
            opt.zero_grad()
            ratios, finite = [], True
            for m0 in range(0, len(mb), micro):
                idx = mb[m0: m0 + micro]
                logprobs, entropy, vpred = first if reuse else policy_outputs(
                    module, input_ids[idx], attention_mask[idx], ro.responses[idx])
                out: PPOLoss = ppo_loss(
                    logprobs, entropy, vpred, ro.logprobs[idx], ro.values[idx],
                    ro.advantages[idx], ro.returns[idx], ro.response_mask[idx],
                    hp.cliprange, hp.cliprange_value, hp.vf_coef, hp.entropy_coef)
                finite = all_ranks_true(bool(torch.isfinite(out.loss)), device)
                if not finite:
                    break
                module.manual_backward(out.loss * len(idx) / len(mb))
                ratios.append(out.policy.ratio_mean.detach())
                for key, get in RECORDED.items():
                    records[key].append(get(out).detach())
            if not finite:
                opt.zero_grad()
                module.guard.bad(module.global_step, "non-finite PPO loss")
                continue
            if not all_ranks_true(bool(torch.stack(ratios).mean() <= hp.ratio_threshold), device):
                opt.zero_grad()
                module.ratio_skips += 1
                continue
            opt.step()
            any_step = True
            if sched is not None:
                sched.step()
    if any_step:
        module.guard.good()
    stats = {k: torch.stack(v).mean() for k, v in records.items() if v}
    if records["policy/ratio_max"]:
        stats["policy/ratio_max"] = torch.stack(records["policy/ratio_max"]).max()
    return stats
