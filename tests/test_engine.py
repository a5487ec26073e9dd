"""The policy-gradient engine without a Trainer: a plain loop drives collect_rollout and ppo_update."""

import pytest
import torch
from helpers import engine_setup

from lightning_rlhf.engine import Optimization, collect_rollout, ppo_update
from lightning_rlhf.guard import NonFiniteGuard


def test_one_iteration_in_a_plain_loop(tiny_gpt2, tokenizer_dir):
    models, cfg, queries, query_mask = engine_setup(tiny_gpt2, tokenizer_dir, ppo_epochs=1)
    gen, timings = torch.Generator().manual_seed(0), {}
    ro, first = collect_rollout(models, cfg, queries, query_mask, 0.1, gen, timings)
    assert ro.responses.shape == (4, 5) and ro.values is not None and first is not None
    assert timings["rollout/logprob_diff_max"] < 1e-5, "sampler and trainer agree on every sampled token"
    before = [p.detach().clone() for p in models.policy.parameters()]
    opt = torch.optim.SGD(models.policy.parameters(), lr=0.1)
    result = ppo_update(models.policy, ro, cfg, Optimization(opt), gen, NonFiniteGuard(), step=0, first=first)
    assert result.steps == 1 and result.ratio_skips == 0
    assert result.stats["policy/ratio_max"].item() == 1.0, "the first ratio is exactly 1"
    assert result.stats["policy/clipfrac"].item() == 0.0
    assert any(not torch.equal(b, p) for b, p in zip(before, models.policy.parameters(), strict=True))


@pytest.mark.parametrize("micro_batch_size", [None, 1])
def test_a_ratio_over_the_threshold_skips_every_step(tiny_gpt2, tokenizer_dir, micro_batch_size):
    models, cfg, queries, query_mask = engine_setup(tiny_gpt2, tokenizer_dir, ppo_epochs=2, num_mini_batches=2,
                                                    micro_batch_size=micro_batch_size, ratio_threshold=0.5)
    gen = torch.Generator().manual_seed(0)
    ro, first = collect_rollout(models, cfg, queries, query_mask, 0.0, gen, {})
    assert (first is None) == (micro_batch_size is not None or cfg.update.num_mini_batches > 1)
    before = [p.detach().clone() for p in models.policy.parameters()]
    opt = torch.optim.SGD(models.policy.parameters(), lr=0.1)
    result = ppo_update(models.policy, ro, cfg, Optimization(opt), gen, NonFiniteGuard(), step=0, first=first)
    assert (result.steps, result.ratio_skips, result.stats) == (0, 4, {})
    assert all(torch.equal(b, p) for b, p in zip(before, models.policy.parameters(), strict=True))
