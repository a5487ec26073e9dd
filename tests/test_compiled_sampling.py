"""The compiled static-cache decode step (``generation.static_step``): same tokens as the eager
loop for GPT-2, Llama and Qwen2 (left padding, EOS stops, k samples per prompt), log-probs that
match the training forward before and after an optimizer step without a recompile, bf16 within
the guard's tolerance, and the fallbacks. Compiling costs seconds, so each tiny model is
compiled for one shape only."""

import warnings

import pytest
import torch
from helpers import TINY_GPT2, TINY_LLAMA, TINY_QWEN2
from torch._dynamo.utils import counters

from lightning_rlhf.generation import Sampler, sample_responses
from lightning_rlhf.generation.static_step import StaticDecoder
from lightning_rlhf.generation.token_sampling import exponential_noise, sample_token
from lightning_rlhf.models.loading import build_from_config
from lightning_rlhf.models.lora import apply_lora
from lightning_rlhf.models.value_head import response_logprobs
from lightning_rlhf.rl.logprobs import logprob_mismatch
from lightning_rlhf.rl.masking import response_mask_after_stop

IDS = torch.tensor([[1, 1, 5, 6], [7, 8, 9, 10], [1, 11, 12, 13]])
MASK = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])


@pytest.fixture(scope="module")
def model(tiny_gpt2_config):
    return build_from_config({**tiny_gpt2_config, "initializer_range": 0.3}, "causal_lm", seed=0).eval()


@pytest.fixture(scope="module")
def tiny_gpt2_config():
    return {**TINY_GPT2, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}


def test_sample_token_by_hand():
    logits = torch.tensor([[0.0, torch.log(torch.tensor(3.0))], [0.0, 0.0]])  # probs [1/4, 3/4] and [1/2, 1/2]
    noise = torch.tensor([[1.0, 4.0], [1.0, 0.5]])  # probs / noise: [1/4, 3/16] -> 0 and [1/2, 1] -> 1
    token, logp, finished = sample_token(logits, noise, 1.0, torch.tensor([False, True]), eos_token_id=0,
                                         pad_token_id=7)
    assert token.tolist() == [0, 7], "row 0 drew token 0 (EOS); row 1 had finished, so padding"
    torch.testing.assert_close(logp, torch.tensor([torch.log(torch.tensor(0.25)), 0.0]))
    assert finished.tolist() == [True, True]
    greedy = sample_token(logits, exponential_noise((2, 2), torch.device("cpu"), None, greedy=True), 1.0,
                          torch.zeros(2, dtype=torch.bool), None, 7)[0]
    assert greedy.tolist() == [1, 0]


def test_exponential_noise_draws_what_multinomial_draws():
    probs = torch.softmax(3 * torch.randn(16, 300, generator=torch.Generator().manual_seed(0)), -1)
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(5):
        expected = torch.multinomial(probs, 1, generator=a).squeeze(-1)
        assert torch.equal((probs / exponential_noise(probs.shape, probs.device, b, False)).argmax(-1), expected)
    assert torch.equal(a.get_state(), b.get_state())


def _both(model, eos, k=2, n=10, **kw):
    out = {}
    for compiled in (False, True):
        gen = torch.Generator().manual_seed(3)
        tokens, logprobs = sample_responses(model, IDS, MASK, n, 0.7, gen, eos, 1, samples_per_prompt=k,
                                            return_logprobs=True, compile_generation=compiled, **kw)
        out[compiled] = tokens, logprobs, gen.get_state()
    return out


def _trainer_logprobs(model, tokens, eos, k=2):
    response_mask = response_mask_after_stop(tokens, eos)
    ids = torch.cat([IDS.repeat_interleave(k, 0), tokens], -1)
    mask = torch.cat([MASK.repeat_interleave(k, 0), response_mask], -1)
    return response_logprobs(model, ids, mask, tokens, 0.7)[0], response_mask


def test_compiled_sampler_gives_the_eager_loops_tokens(model):
    plain = _both(model, None)
    eager, compiled = plain[False], plain[True]
    assert torch.equal(eager[0], compiled[0]) and eager[0].shape == (6, 10)
    torch.testing.assert_close(eager[1], compiled[1], rtol=0, atol=1e-5)
    assert torch.equal(eager[2], compiled[2]), "both consume the generator alike (exact resume)"

    # a stop token the model actually emits: rows stop at different steps, then get padding
    eos = int(eager[0][:, 2:].flatten().mode().values)
    stopped = _both(model, eos)
    assert torch.equal(stopped[False][0], stopped[True][0])
    torch.testing.assert_close(stopped[False][1], stopped[True][1], rtol=0, atol=1e-5)
    tokens = stopped[True][0]
    after = response_mask_after_stop(tokens, eos) == 0
    assert after.any() and (tokens[after] == 1).all() and (stopped[True][1][after] == 0).all()


def test_compiled_logprobs_follow_the_weights_without_recompiling(model):
    policy = build_from_config({**model.config.to_dict(), "initializer_range": 0.3}, "causal_lm", seed=1)
    policy.load_state_dict(model.state_dict())
    policy.eval()  # no dropout in the trainer's forward either; gradients still flow
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    before = None
    for step in range(2):
        gen = torch.Generator().manual_seed(step)
        tokens, logprobs = sample_responses(policy, IDS, MASK, 10, 0.7, gen, None, 1, samples_per_prompt=2,
                                            return_logprobs=True, compile_generation=True)
        trainer, response_mask = _trainer_logprobs(policy, tokens, None)
        assert logprob_mismatch(logprobs, trainer, response_mask)[1] < 1e-5
        if step == 0:
            frames = counters["frames"]["ok"]
            before = logprobs
            (-trainer.mean()).backward()
            opt.step()
        else:
            assert counters["frames"]["ok"] == frames, "the optimizer step did not trigger a recompile"
            assert not torch.allclose(before, logprobs), "the new weights are the ones sampled from"


def test_bf16_compiled_logprobs_agree_with_fp32(tiny_gpt2_config):
    model = build_from_config(tiny_gpt2_config, "causal_lm", seed=0).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens, logprobs = sample_responses(model, IDS, MASK, 10, 0.7, torch.Generator().manual_seed(0), None, 1,
                                            samples_per_prompt=2, return_logprobs=True, compile_generation=True)
        in_bf16, response_mask = _trainer_logprobs(model, tokens, None)
    assert logprobs.dtype == torch.float32
    fp32, _ = _trainer_logprobs(model, tokens, None)
    mean, _ = logprob_mismatch(logprobs, fp32, response_mask)
    assert 0 < mean < 1e-2, "bf16 differs from fp32, but within the guard's default tolerance"
    assert logprob_mismatch(logprobs, in_bf16, response_mask)[0] < mean, "a bf16 trainer is closer still"


SPECIAL = {"vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1, "initializer_range": 0.3}
ARCHITECTURES = {
    "llama": {**TINY_LLAMA, **SPECIAL},
    "qwen2": {**TINY_QWEN2, **SPECIAL},
    # transformers folds 1 / (layer + 1) into the attention's scaling; the step must not divide again
    "gpt2_inverse_layer_idx": {"model_type": "gpt2", "n_layer": 3, "n_head": 2, "n_embd": 32, "n_positions": 64,
                               "scale_attn_by_inverse_layer_idx": True, **SPECIAL},
}


@pytest.mark.parametrize("name", [*ARCHITECTURES, "llama_lora"])
def test_any_causal_lm_compiles_and_samples_the_eager_loops_tokens(name):
    """Compiled == eager tokens (bit-identical) and log-probs, and the training forward's log-probs
    within 1e-5, for left-padded prompts, k = 2 samples each, with and without an EOS stop."""
    model = build_from_config(ARCHITECTURES[name.removesuffix("_lora")], "causal_lm", seed=0).eval()
    if name.endswith("_lora"):
        model = apply_lora(model, r=4, alpha=8, target_modules=None)
        for n, p in model.named_parameters():
            if "lora_B" in n:  # peft starts B at zero (a no-op adapter); make the adapter count
                torch.nn.init.normal_(p, std=0.3, generator=torch.Generator().manual_seed(0))
    assert StaticDecoder.supports(model) is None
    sampler = Sampler()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = _both(model, None, sampler=sampler)
        eos = int(plain[False][0][:, 2:].flatten().mode().values)  # a stop token the model emits
        stopped = _both(model, eos, sampler=sampler)
    assert not [w for w in caught if "compile_generation" in str(w.message)], "no fallback notice"
    assert sampler.decoder(model) is not None
    for eager, compiled, stop in ((plain[False], plain[True], None), (stopped[False], stopped[True], eos)):
        assert torch.equal(eager[0], compiled[0]) and eager[0].shape[0] == 6
        torch.testing.assert_close(eager[1], compiled[1], rtol=0, atol=1e-5)
        assert torch.equal(eager[2], compiled[2]), "both consume the generator alike (exact resume)"
        trainer, response_mask = _trainer_logprobs(model, compiled[0], stop)
        assert logprob_mismatch(compiled[1], trainer, response_mask)[1] < 1e-5
    tokens = stopped[True][0]
    after = response_mask_after_stop(tokens, eos) == 0
    assert after.any() and (tokens[after] == 1).all() and (stopped[True][1][after] == 0).all()
    assert len(set((~after).sum(-1).tolist())) > 1, "rows stop at different steps"


# GPT-2 options the step takes from the model's own modules; run eagerly (the graph is the same
# Python), so each flag costs no compile
GPT2_FLAGS = [{"scale_attn_weights": False}, {"activation_function": "relu"}, {"n_inner": 48},
              {"layer_norm_epsilon": 0.5}, {"tie_word_embeddings": False},
              {"scale_attn_by_inverse_layer_idx": True, "n_layer": 3}, {"reorder_and_upcast_attn": True}]


@pytest.mark.parametrize("flags", GPT2_FLAGS, ids=lambda f: next(iter(f)))
def test_the_step_implements_each_gpt2_flag(tiny_gpt2_config, flags, monkeypatch):
    flagged = build_from_config({**tiny_gpt2_config, "initializer_range": 0.3, **flags}, "causal_lm",
                                seed=0).eval()
    assert StaticDecoder.supports(flagged) is None
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    both = _both(flagged, None, n=6)
    assert torch.equal(both[False][0], both[True][0]), flags
    torch.testing.assert_close(both[False][1], both[True][1], rtol=0, atol=1e-5)
    trainer, response_mask = _trainer_logprobs(flagged, both[True][0], None)
    assert logprob_mismatch(both[True][1], trainer, response_mask)[1] < 1e-5


FALLBACKS = {
    "cross_attention": ({**TINY_GPT2, **SPECIAL, "add_cross_attention": True}, "with cross-attention"),
    "short_sliding_window": ({**TINY_LLAMA, **SPECIAL, "model_type": "mistral", "sliding_window": 8},
                             "sliding window of 8 tokens, shorter than the rollout's 16"),
}


@pytest.mark.parametrize("name", FALLBACKS)
def test_models_without_a_static_path_fall_back_with_one_notice(name):
    config, why = FALLBACKS[name]
    other = build_from_config(config, "causal_lm", seed=0).eval()
    with pytest.warns(UserWarning, match=f"compile_generation: .*{why}.*eager loop") as record:
        fallback = _both(other, None, sampler=Sampler())
    assert len([w for w in record if "compile_generation" in str(w.message)]) == 1
    assert torch.equal(fallback[False][0], fallback[True][0])
    assert torch.equal(fallback[False][2], fallback[True][2])


def test_a_failing_compile_falls_back_and_leaves_the_draws_unchanged(model):
    broken = build_from_config({**model.config.to_dict()}, "causal_lm", seed=2).eval()

    def fail(*args, **kw):
        raise RuntimeError("no C++ compiler\nsecond line")

    sampler = Sampler()
    sampler.decoder(broken).step = fail
    with pytest.warns(UserWarning, match=r"compiling the decode step failed \(RuntimeError: no C\+\+ compiler\)"):
        fallback = _both(broken, None, sampler=sampler)
    assert torch.equal(fallback[False][0], fallback[True][0]) and torch.equal(fallback[False][2], fallback[True][2])
    assert sampler.decoder(broken) is None
