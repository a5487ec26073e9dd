"""DAPO's dynamic sampling: replace the groups that teach nothing by groups of other prompts.

A group-relative advantage (``rloo``, ``grpo``, ``dr_grpo``, ``reinforce_pp_baseline``) of a
prompt whose k samples all score the same is 0 for every sample, so that prompt adds no
policy gradient, only noise to the KL and the token counts (TRL logs the share as
``frac_reward_zero_std``). DAPO (Yu et al. 2025, arXiv:2503.14476) drops such groups and keeps
sampling until the batch is full. Here the batch keeps its b prompts: the zero-std groups are
dropped, ``refill`` gives as many new prompts, and their groups are drawn and judged the same
way, at most ``tries`` times; a batch still short after the last try is completed with the
dropped groups (they cost compute but do not bias the gradient), so every rank's batch has the
same shape and no rank waits for another. The counts are summed over ranks for the logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from lightning_rlhf.distributed import global_sum
from lightning_rlhf.rl.estimators import nonzero_std_groups


class Drawn(NamedTuple):
    """Scored samples of p prompts, k each (n = p * k rows, a prompt's samples consecutive).

    Attributes:
        prompts, prompt_mask: (p, q) left-padded prompts.
        responses, response_mask: (n, r) responses (pad after the stop) and their mask.
        sampler_logprobs: (n, r) the sampler's log-probs of the responses (0 off the mask).
        scores: (n,) scores.
        lengths: (n,) drawn response lengths, or None for a fixed length.
    """

    prompts: torch.Tensor
    prompt_mask: torch.Tensor
    responses: torch.Tensor
    response_mask: torch.Tensor
    sampler_logprobs: torch.Tensor
    scores: torch.Tensor
    lengths: torch.Tensor | None


def pad_cat(parts: list[torch.Tensor], value: float, left: bool) -> torch.Tensor:
    """Concatenate (n_i, t_i) tensors along rows, padding each to the widest t with ``value``
    on the left (prompts) or the right (responses)."""
    width = max(p.shape[1] for p in parts)
    padded = []
    for p in parts:
        pad = p.new_full((p.shape[0], width - p.shape[1]), value)
        padded.append(torch.cat([pad, p] if left else [p, pad], dim=1))
    return torch.cat(padded)


def select_groups(d: Drawn, keep: torch.Tensor, k: int) -> Drawn:
    """The groups of ``d`` where ``keep`` (p,) is True."""
    rows = keep.repeat_interleave(k)
    return Drawn(d.prompts[keep], d.prompt_mask[keep], d.responses[rows], d.response_mask[rows],
                 d.sampler_logprobs[rows], d.scores[rows], None if d.lengths is None else d.lengths[rows])


def concat_groups(parts: list[Drawn], pad_token_id: int) -> Drawn:
    """The groups of several draws as one, prompts left-padded and responses right-padded."""
    lengths = None if parts[0].lengths is None else torch.cat([p.lengths for p in parts])
    return Drawn(pad_cat([p.prompts for p in parts], pad_token_id, left=True),
                 pad_cat([p.prompt_mask for p in parts], 0, left=True),
                 pad_cat([p.responses for p in parts], pad_token_id, left=False),
                 pad_cat([p.response_mask for p in parts], 0, left=False),
                 pad_cat([p.sampler_logprobs for p in parts], 0.0, left=False),
                 torch.cat([p.scores for p in parts]), lengths)


def dynamic_draw(draw: Callable[[torch.Tensor, torch.Tensor], Drawn], prompts: torch.Tensor,
                 prompt_mask: torch.Tensor, k: int, tries: int, pad_token_id: int,
                 refill: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
                 ) -> tuple[Drawn, dict[str, float]]:
    """Draw groups for the b prompts, then refill the zero-std ones (module docstring).

    Args:
        draw: samples and scores k responses for each of (p, q) prompts.
        prompts, prompt_mask: (b, q) the batch's left-padded prompts.
        refill: ``n -> (n, q')`` new prompts and their mask; None re-draws the dropped prompts.
    Returns:
        A ``Drawn`` of b prompts (the kept groups first, in draw order) and the counts over all
        ranks: ``dynamic_sampling/zero_std_groups`` (dropped, over every try),
        ``dynamic_sampling/refill_prompts`` (prompts drawn to replace them) and
        ``dynamic_sampling/zero_std_kept`` (groups kept because the tries ran out).
    """
    b = prompts.shape[0]
    first = draw(prompts, prompt_mask)
    keep = nonzero_std_groups(first.scores, k)
    kept, dropped = [select_groups(first, keep, k)], [select_groups(first, ~keep, k)]
    zero, refilled, have = int((~keep).sum()), 0, int(keep.sum())
    for _ in range(tries):
        need = b - have
        if need == 0:
            break
        last = dropped[-1]
        new_prompts, new_mask = refill(need) if refill is not None else (last.prompts, last.prompt_mask)
        new = draw(new_prompts, new_mask)
        refilled += need
        keep = nonzero_std_groups(new.scores, k)
        kept.append(select_groups(new, keep, k))
        dropped.append(select_groups(new, ~keep, k))
        zero += int((~keep).sum())
        have += int(keep.sum())
    short = b - have
    if short:
        fill = torch.arange(zero, device=prompts.device) < short  # zero >= short: every try refills the dropped
        kept.append(select_groups(concat_groups(dropped, pad_token_id), fill, k))
    out = concat_groups([d for d in kept if d.prompts.shape[0]], pad_token_id)
    counts = global_sum(torch.tensor([zero, refilled, short], dtype=torch.float32, device=prompts.device))
    return out, {"dynamic_sampling/zero_std_groups": float(counts[0]),
                 "dynamic_sampling/refill_prompts": float(counts[1]),
                 "dynamic_sampling/zero_std_kept": float(counts[2])}


def train_prompt_refill(data, generator: torch.Generator,
                        device: torch.device) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None:
    """``dynamic_draw``'s refill from a data module with ``train_prompts(indices)`` (``IMDBDataModule``): n train
    prompts drawn with the rollout ``generator``, so a resumed run draws the same ones; None without one."""
    if not hasattr(data, "train_prompts"):
        return None
    size = len(data.splits["train"])

    def refill(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(size, (n,), generator=generator, device=device).tolist()
        batch = data.train_prompts(idx)
        return batch["input_ids"].to(device), batch["attention_mask"].to(device)
    return refill
