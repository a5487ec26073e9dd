"""A PPOModule whose rollout is a fixed, seeded batch with responses of 4-16 tokens.

Used to compare updates across micro-batch sizes and process counts: every configuration
trains on the same experience, each rank on its contiguous share of the rows.
"""

import torch

from lightning_rlhf.models.value_head import response_logprobs
from lightning_rlhf.modules import PPOModule
from lightning_rlhf.rl.rollout import Rollout


def fixed_rollout(module: PPOModule, rows: int = 8, query_len: int = 3, max_len: int = 16,
                  seed: int = 0) -> Rollout:
    """With ``jeffreys_beta`` < 1 the rollout also holds demos of 2-12 tokens (BOND's forward term)."""
    g = torch.Generator().manual_seed(seed)
    vocab = module.policy.lm.config.vocab_size
    queries = torch.randint(2, vocab, (rows, query_len), generator=g)
    query_mask = torch.ones_like(queries)
    query_mask[::3, 0] = 0  # some left padding
    lengths = torch.randint(4, max_len + 1, (rows,), generator=g)
    response_mask = (torch.arange(max_len).expand(rows, max_len) < lengths.unsqueeze(-1)).long()
    responses = torch.randint(2, vocab, (rows, max_len), generator=g).masked_fill(response_mask == 0, 1)
    ids, mask = torch.cat([queries, responses], -1), torch.cat([query_mask, response_mask], -1)
    with torch.no_grad():
        logprobs, values = response_logprobs(module.policy, ids, mask, responses, module.hparams.temperature)
    m = response_mask.float()
    advantages = torch.randn(rows, max_len, generator=g) * m
    returns = torch.randn(rows, max_len, generator=g) * m
    zeros = torch.zeros_like(m)
    ref_logprobs = logprobs + 0.3 * torch.randn(rows, max_len, generator=g) * m  # a KL loss has work to do
    demos = demo_mask = None
    if module.hparams.jeffreys_beta < 1:
        demo_lengths = torch.randint(2, 13, (rows,), generator=g)
        demo_mask = (torch.arange(12).expand(rows, 12) < demo_lengths.unsqueeze(-1)).long()
        demos = torch.randint(2, vocab, (rows, 12), generator=g).masked_fill(demo_mask == 0, 1)
    return Rollout(queries, query_mask, responses, response_mask, logprobs, ref_logprobs,
                   None if values is None else values * m, torch.randn(rows, generator=g), zeros, advantages,
                   returns, zeros, demos, demo_mask)


class FixedRolloutPPO(PPOModule):
    """Trains on ``fixed_rollout`` (built from the initial weights); rank k takes the k-th share."""

    def rollout(self, queries, query_mask, timings):
        if not hasattr(self, "_fixed"):
            self._fixed = fixed_rollout(self)
        world, rank = self.trainer.world_size, self.global_rank
        share = self._fixed.queries.shape[0] // world
        rows = slice(rank * share, (rank + 1) * share)
        return Rollout(*(None if x is None else x[rows].to(self.device) for x in self._fixed)), None


LINEAR_ADAM = dict(learning_rate=1.0, adam_eps=10.0, max_grad_norm=None, ppo_epochs=1, num_mini_batches=1,
                   weight_decay=0.0)  # with a large eps, AdamW's first step is ~ lr * grad / eps


CRITIC_FREE = dict(advantage_estimator="dr_grpo", samples_per_prompt=2, loss_aggregation="seq_mean_token_sum_norm",
                   kl_in_reward=False, kl_loss_coef=0.5)  # no value head; every piece of the critic-free loss


JBOND = dict(advantage_estimator="rloo", samples_per_prompt=2, reward_transform="jbond", anchor_ema=0.5,
             reference_samples_per_prompt=2, jeffreys_beta=0.5)  # demos in the loss, an EMA anchor after it

MODES = {"ppo": {}, "critic_free": CRITIC_FREE, "jbond": JBOND}


def flat_params(module: PPOModule) -> torch.Tensor:
    """The policy's parameters, then the anchor's (if any), as one float64 vector."""
    anchor = [] if module.anchor is None else list(module.anchor.parameters())
    return torch.cat([p.detach().reshape(-1).double() for p in [*module.policy.parameters(), *anchor]])
