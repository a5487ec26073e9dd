"""Rows of the sample table: what the policy writes now, and how the reward judges it."""

from __future__ import annotations

import torch

from lightning_rlhf.engine.config import EngineConfig
from lightning_rlhf.engine.rollout import RolloutModels
from lightning_rlhf.generation import generate_texts
from lightning_rlhf.rl.estimators import SEQUENCE_LEVEL, group_mean_baseline, sequence_advantages


@torch.no_grad()
def sample_table_rows(models: RolloutModels, cfg: EngineConfig, prompts: list[str], max_new_tokens: int,
                      temperature: float, seed: int) -> list[dict]:
    """Prompt, response and its (normalised) score for each prompt.

    With ``samples_per_prompt`` k > 1 the k responses of a prompt follow each other (the prompt
    shown on the first), with the advantage of each score within its group (the KL aside): the
    estimator's for the sequence-level ones (``rloo``, ``grpo``, ...), score minus the group mean
    otherwise.
    """
    k = cfg.sampling.samples_per_prompt
    repeated = [p for p in prompts for _ in range(k)]
    lm = models.policy.lm
    texts = generate_texts(lm, models.tokenizer, repeated, max_new_tokens, temperature, seed,
                           stop_at_eos=cfg.sampling.stop_at_eos)
    scores = models.score_norm(models.reward(repeated, texts).to(lm.device))
    rows = [{"prompt": p, "response": t, "reward": float(s)}
            for p, t, s in zip(repeated, texts, scores.tolist(), strict=True)]
    if k == 1:
        return rows
    estimator = cfg.advantages.advantage_estimator
    advantages = (sequence_advantages(estimator, scores, k) if estimator in SEQUENCE_LEVEL
                  else scores - group_mean_baseline(scores, k))
    for i, (row, adv) in enumerate(zip(rows, advantages.tolist(), strict=True)):
        row["prompt"] = row["prompt"] if i % k == 0 else ""
        row["advantage"] = adv
    return rows
