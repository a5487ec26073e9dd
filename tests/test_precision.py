"""Log-probs and sampling distributions come from an fp32 LM head, also under bf16 autocast."""

import warnings

import pytest
import torch

from lightning_rlhf.generation import sample_responses
from lightning_rlhf.generation.eager import CachedDecoder
from lightning_rlhf.models.forward import response_logits
from lightning_rlhf.models.loading import build_from_config
from lightning_rlhf.models.value_head import PolicyWithValueHead
from lightning_rlhf.rl.logprobs import left_pad_position_ids, logprobs_from_logits

CONFIG = {"model_type": "gpt2", "n_head": 2, "n_embd": 64, "n_positions": 64, "vocab_size": 1000,
          "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}


def _model(n_layer: int):
    model = build_from_config({**CONFIG, "n_layer": n_layer}, "causal_lm", seed=0).eval()
    with torch.no_grad():  # logits of a few units, as in a trained model (random init gives ~0.2)
        model.transformer.ln_f.weight.mul_(30)
    return model


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 1000, (8, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, :3] = 0
    return ids, mask


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _last_12_logprobs(model, ids, mask):
    """Log-probs (b, 12) of the last 12 tokens through ``response_logits`` (fp32 head)."""
    return logprobs_from_logits(response_logits(model, ids, mask, 12), ids[:, -12:], 0.7)


def test_bf16_logprobs_equal_fp32_when_only_the_head_differs():
    """Without transformer blocks the trunk is fp32 under autocast, so any gap is the LM head's:
    a bf16 head misses fp32 by ~0.06 nats per token (0.19 at worst); ours matches exactly."""
    model, (ids, mask) = _model(0), _batch()
    responses = ids[:, -12:]
    with torch.no_grad():
        fp32 = _last_12_logprobs(model, ids, mask)
        with _bf16():
            ours = _last_12_logprobs(model, ids, mask)
            policy_logits, _ = PolicyWithValueHead(model)(ids, mask, 12)
            hf_logits = model(input_ids=ids, attention_mask=mask, position_ids=left_pad_position_ids(mask)).logits
    torch.testing.assert_close(ours, fp32, atol=1e-6, rtol=0)
    torch.testing.assert_close(logprobs_from_logits(policy_logits, responses, 0.7), fp32, atol=1e-6, rtol=0)
    bf16_head = logprobs_from_logits(hf_logits[:, -13:-1], responses, 0.7)
    assert (bf16_head - fp32).abs().mean() > 1e-2, "the check can tell a bf16 head apart"


def test_bf16_sampling_logits_are_fp32():
    model, (ids, mask) = _model(0), _batch()
    with torch.no_grad():
        fp32 = CachedDecoder(model)(ids, mask, left_pad_position_ids(mask))
        with _bf16():
            ours = CachedDecoder(model)(ids, mask, left_pad_position_ids(mask))
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, fp32, atol=1e-5, rtol=0)
        fp32_tokens = sample_responses(model, ids, mask, 6, 0.7, torch.Generator().manual_seed(1))
        with _bf16():
            bf16_tokens = sample_responses(model, ids, mask, 6, 0.7, torch.Generator().manual_seed(1))
    assert torch.equal(fp32_tokens, bf16_tokens)


def test_bf16_logprobs_of_a_full_model_stay_close():
    """With transformer blocks the trunk's bf16 matmuls add their own noise; the fp32 head keeps
    the mean error per token under 0.03 nats here (a bf16 head gives about 0.05)."""
    model, (ids, mask) = _model(2), _batch()
    with torch.no_grad():
        fp32 = _last_12_logprobs(model, ids, mask)
        with _bf16():
            ours = _last_12_logprobs(model, ids, mask)
    assert (ours - fp32).abs().mean() < 0.03


def test_sampling_uses_the_supported_cache_argument():
    model, (ids, mask) = _model(1), _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sample_responses(model, ids, mask, 4, 0.7, torch.Generator().manual_seed(0))
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_cpu_bf16_flags_read_from_cpuinfo(tmp_path):
    from lightning_rlhf.precision import cpu_bf16_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    assert cpu_bf16_flags(info) == ["avx512_bf16"]
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_bf16_flags(info) == []
    assert cpu_bf16_flags(tmp_path / "missing") is None


@pytest.mark.parametrize("flags, expected", [(["amx_bf16"], "bf16-mixed"), ([], "32-true"), (None, "32-true")])
def test_cli_keeps_cpu_bf16_only_with_native_support(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, monkeypatch,
                                                     capsys, flags, expected):
    from helpers import sft_config

    import lightning_rlhf.cli as cli

    monkeypatch.setattr(cli, "cpu_bf16_flags", lambda: flags)
    config = sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    built = cli.build_cli(["--config", str(config), "--trainer.precision", "bf16-mixed"], run=False)
    assert built.trainer.precision == expected
    assert f"precision: {expected}" in capsys.readouterr().out
    kept = cli.build_cli(["--config", str(config)], run=False)  # 32-true asked: nothing to say
    assert kept.trainer.precision == "32-true" and "precision:" not in capsys.readouterr().out


def test_a_bf16_checkpoint_loads_as_fp32_master_weights(tmp_path, tiny_gpt2):
    """transformers keeps a checkpoint's stored dtype; a bf16 hub model (Qwen2.5, Llama 3) would
    otherwise train bf16 masters under bf16-mixed and round small updates away."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from lightning_rlhf.models.loading import load_causal_lm, load_sequence_classifier
    from lightning_rlhf.modules.reward_model import load_reward_head

    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**tiny_gpt2)).to(torch.bfloat16)
    lm.save_pretrained(tmp_path / "lm")
    classifier = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(**tiny_gpt2, num_labels=2))
    classifier.to(torch.bfloat16).save_pretrained(tmp_path / "classifier")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "lm").dtype == torch.bfloat16, "the premise"
    assert load_causal_lm(str(tmp_path / "lm")).dtype == torch.float32
    assert load_sequence_classifier(str(tmp_path / "classifier")).dtype == torch.float32
    assert load_reward_head(str(tmp_path / "lm"), None, 0).dtype == torch.float32
