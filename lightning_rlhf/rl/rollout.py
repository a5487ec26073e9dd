"""``Rollout``: one PPO batch of experience, with the shape of every field."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Rollout(NamedTuple):
    """Experience from one batch of prompts; b = batch, q = query length, r = response length.

    Attributes:
        queries: (b, q) left-padded prompt ids.
        query_mask: (b, q) 1 on real prompt tokens.
        responses: (b, r) sampled ids, pad after the stop.
        response_mask: (b, r) 1 up to and including the stop token.
        logprobs: (b, r) log-probs of the responses under the rollout policy.
        ref_logprobs: (b, r) the same under the frozen reference.
        values: (b, r) value estimates of the rollout policy; None without a critic.
        scores: (b,) reward-model scores (after penalties and normalisation).
        rewards: (b, r) per-token rewards: -kl_coef * KL, plus the score on the last token.
        advantages: (b, r) whitened GAE advantages, or a critic-free estimator's (``rl.estimators``).
        returns: (b, r) advantages + values, before whitening; the advantages without a critic.
        kl: (b, r) per-token KL estimates (masked).
        demos: (b, d) responses the forward (SFT) term imitates, each row's prompt's best
            reference sample (BOND); None without that term.
        demo_mask: (b, d) 1 on the demos' response tokens.
        sampler_logprobs: (b, r) the sampler's own log-probs of the responses (they differ a
            little from ``logprobs`` under bf16 or a compiled decoder); None when not kept.
    """

    queries: torch.Tensor
    query_mask: torch.Tensor
    responses: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor | None
    scores: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    kl: torch.Tensor
    demos: torch.Tensor | None = None
    demo_mask: torch.Tensor | None = None
    sampler_logprobs: torch.Tensor | None = None

    def input_ids(self, index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """(b, q + r) query + response ids of the selected rows."""
        return torch.cat([self.queries[index], self.responses[index]], dim=-1)

    def attention_mask(self, index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """(b, q + r) mask of the selected rows; padding after the stop is masked out."""
        return torch.cat([self.query_mask[index], self.response_mask[index]], dim=-1)

    def demo_input_ids(self, index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """(b, q + d) query + demo ids of the selected rows."""
        return torch.cat([self.queries[index], self.demos[index]], dim=-1)

    def demo_attention_mask(self, index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """(b, q + d) mask of the selected rows' query + demo."""
        return torch.cat([self.query_mask[index], self.demo_mask[index]], dim=-1)
