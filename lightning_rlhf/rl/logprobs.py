"""Token log-probabilities, entropies and position ids for left-padded batches."""

from __future__ import annotations

import torch


def left_pad_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on the first real token of each row.

    With left padding, ``arange`` positions would shift every prompt by its padding; GPT-2's
    learned position embeddings then see other positions than in training (N-details G3).

    Args:
        attention_mask: (b, t) with 1 on real tokens.
    Returns:
        (b, t) long tensor; padded slots get 0.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def logprobs_from_logits(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log p(token) under ``softmax(logits / temperature)``.

    The same temperature that sampled the tokens must divide the logits here, or the policy
    PPO optimises is not the one that sampled (N-details P1).

    Args:
        logits: (b, t, v) raw logits predicting ``tokens``.
        tokens: (b, t) token ids.
    Returns:
        (b, t) float32 log-probabilities.
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def logprobs_and_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both from one log-softmax over the vocabulary: (b, t, v), (b, t) -> (b, t), (b, t).

    The entropy carries gradient only with ``entropy_grad`` (an entropy bonus); otherwise it is
    a statistic and keeps no (b, t, v) tensor alive for backward.
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(logp.exp() * logp).sum(-1)
    return token_logp, entropy


def logprob_mismatch(sampler_logprobs: torch.Tensor, logprobs: torch.Tensor,
                     response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and max |sampler log-prob - trainer log-prob| over the response tokens.

    The sampler's cached decode and the trainer's full forward must give every sampled token
    the same log-prob; when they do not (weights changed between them, bf16 rounding, a
    different attention path), PPO's first ratio is no longer 1 and its importance weights
    are off (TRL's importance-sampling correction and verl's rollout/actor mismatch metrics
    watch the same thing).

    Args:
        sampler_logprobs, logprobs: (b, r) log-probs of the same tokens.
        response_mask: (b, r) 1 on response tokens.
    Returns:
        Two scalars: the mean over masked tokens and the max (0 without tokens).
    """
    diff = (sampler_logprobs.float() - logprobs.float()).abs() * response_mask
    n = response_mask.sum()
    return diff.sum() / n.clamp(min=1), diff.max() if diff.numel() else diff.new_zeros(())

