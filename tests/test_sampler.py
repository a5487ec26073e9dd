"""``generation.Sampler`` owns the compiled decoders it made: policies loaded, sampled from with
the compiled step and deleted are freed (decoders, static caches and pre-cast trunk copies with
them), a new policy of a known shape reuses the compiled graph, and copies start empty."""

import copy
import gc
import weakref

import torch
from helpers import TINY_GPT2
from torch._dynamo.utils import counters

from lightning_rlhf.generation import Sampler, sample_responses
from lightning_rlhf.models.loading import build_from_config, load_causal_lm

CONFIG = {**TINY_GPT2, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
IDS = torch.tensor([[1, 1, 5, 6], [7, 8, 9, 10]])
MASK = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])


def _sample(policy, **kw):
    return sample_responses(policy, IDS, MASK, 6, 0.7, torch.Generator().manual_seed(0), None, 1,
                            compile_generation=True, **kw)


def test_five_policies_loaded_sampled_and_deleted_leave_none_alive(tmp_path):
    shared = Sampler()
    refs, decoders, frames = [], [], []
    for seed in range(5):
        folder = tmp_path / f"policy{seed}"
        build_from_config(CONFIG, "causal_lm", seed=seed).save_pretrained(folder)
        policy = load_causal_lm(str(folder)).eval()
        _sample(policy)  # the sampler attached to the policy
        _sample(policy, sampler=shared)
        if seed == 4:  # under autocast the decoder also keeps a pre-cast bf16 copy of the trunk
            with torch.autocast("cpu", dtype=torch.bfloat16):
                _sample(policy)
        frames.append(counters["frames"]["ok"])
        refs.append(weakref.ref(policy))
        decoders += [weakref.ref(Sampler.of(policy).decoder(policy)), weakref.ref(shared.decoder(policy))]
        del policy
    gc.collect()
    assert [ref() is None for ref in refs] == [True] * 5, "no policy is kept alive"
    assert all(ref() is None for ref in decoders), "their decoders went with them"
    assert len(shared._decoders) == 0
    assert frames[1] == frames[2] == frames[3], "a new policy of a known shape reuses the compiled graph"


def test_deleting_a_sampler_frees_its_decoders_and_copies_start_empty():
    policy = build_from_config(CONFIG, "causal_lm", seed=0).eval()
    sampler = Sampler()
    expected = _sample(policy, sampler=sampler)
    decoder = weakref.ref(sampler.decoder(policy))
    del sampler
    gc.collect()
    assert decoder() is None and policy is not None

    _sample(policy)
    twin = copy.deepcopy(policy)  # e.g. an EMA anchor or an export copy of the policy
    assert Sampler.of(twin) is not Sampler.of(policy) and len(Sampler.of(twin)._decoders) == 0
    assert torch.equal(_sample(twin), expected)
