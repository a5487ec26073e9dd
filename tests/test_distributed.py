"""The collectives of ``lightning_rlhf.distributed`` without a process group, and the per-rank
checkpoint entries (the 2-process behaviour is tested in test_sharding.py's resume test)."""

from __future__ import annotations

import torch

from lightning_rlhf.distributed import gather_objects, global_mean, global_sum, rank, this_ranks, world_size


def test_without_a_process_group_the_collectives_are_local():
    x = torch.tensor([1.0, 2.0, 6.0])
    assert rank() == 0 and world_size() == 1
    assert global_mean(x).item() == 3.0 and torch.equal(global_sum(x), x)
    assert gather_objects({"a": 1}) == [{"a": 1}]


def test_each_rank_takes_its_own_entry_and_a_new_rank_none():
    state = torch.arange(4, dtype=torch.uint8)
    assert torch.equal(this_ranks([state, state + 1]), state), "rank 0 reads entry 0"
    assert torch.equal(this_ranks(state), state), "a checkpoint with one bare state is rank 0's"
    assert this_ranks([]) is None, "a rank the saving run did not have starts afresh"
