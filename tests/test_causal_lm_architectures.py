"""Any Hugging Face causal LM end to end: SFT, PPO (GAE with LoRA, RLOO) and DPO (LoRA) run a few
steps through ``lightning-rlhf fit`` on tiny Llama and Qwen2 configs, sampling with the compiled
static-cache step (no fallback notice, sampler and trainer agree on every token's log-prob), and
LoRA adapts each architecture's own attention projections."""

import warnings
from pathlib import Path

import pytest
import yaml
from helpers import TINY_GPT2, TINY_LLAMA, TINY_QWEN2, write_jsonl

from lightning_rlhf.cli import build_cli
from lightning_rlhf.errors import ConfigError
from lightning_rlhf.models.loading import build_from_config
from lightning_rlhf.models.lora import apply_lora, lora_target_modules

ARCHITECTURES = {"llama": TINY_LLAMA, "qwen2": TINY_QWEN2}
TOKENS = {"vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
QUIET = {"accelerator": "cpu", "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
         "logger": False}


def _fit(tmp_path: Path, name: str, model: dict, data: dict, max_steps: int = 2):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"seed_everything": 0, "trainer": {**QUIET, "max_steps": max_steps,
                                                                            "default_root_dir": str(tmp_path / name)},
                                    "model": model, "data": data}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = build_cli(["fit", "--config", str(path)])
    notices = [str(w.message) for w in caught if "compile_generation" in str(w.message)]
    assert not notices, f"{name}: {notices}"
    assert cli.trainer.global_step == max_steps, name
    return cli


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_sft_ppo_and_dpo_run_through_the_cli(arch, tmp_path, tokenizer_dir, imdb_dir, tiny_classifier_dir):
    config = {**ARCHITECTURES[arch], **TOKENS}
    sft = tmp_path / "sft"
    _fit(tmp_path, "sft", {"class_path": "lightning_rlhf.modules.SFTModule", "init_args": {
        "model_name_or_path": None, "model_config": config, "tokenizer_name_or_path": tokenizer_dir,
        "learning_rate": 1e-3, "export_dir": str(sft)}},
        {"data_path": imdb_dir, "tokenizer": tokenizer_dir, "shape": "lm", "block_size": 32, "batch_size": 4,
         "val_size": 8, "max_train_samples": 16})
    assert yaml.safe_load((sft / "config.json").read_text())["model_type"] == arch

    reward = tiny_classifier_dir({0: "NEGATIVE", 1: "POSITIVE"})
    prompts = {"data_path": imdb_dir, "tokenizer": tokenizer_dir, "shape": "prompts", "batch_size": 4,
               "val_size": 8, "min_review_chars": 50}
    for estimator, extra in (("gae", {"lora_r": 4}), ("rloo", {"samples_per_prompt": 2})):
        cli = _fit(tmp_path, f"ppo_{estimator}", {"class_path": "lightning_rlhf.modules.PPOModule", "init_args": {
            "policy_name_or_path": str(sft), "tokenizer_name_or_path": str(sft), "reward_model": reward,
            "response_min_tokens": 3, "response_max_tokens": 5, "ppo_epochs": 1, "learning_rate": 1e-3,
            "advantage_estimator": estimator, "compile_generation": True,
            "export_dir": str(tmp_path / f"ppo_{estimator}"), **extra}}, prompts)
        assert float(cli.trainer.callback_metrics["rollout/logprob_diff_mean"]) < 1e-5, estimator

    pairs = [{"prompt": "the movie", "chosen": " was great", "rejected": " was awful"}] * 16
    write_jsonl(tmp_path / "pairs" / "train.jsonl", pairs)
    _fit(tmp_path, "dpo", {"class_path": "lightning_rlhf.modules.DPOModule", "init_args": {
        "policy_name_or_path": str(sft), "tokenizer_name_or_path": str(sft), "lora_r": 4, "learning_rate": 1e-3,
        "export_dir": str(tmp_path / "dpo")}},
        {"data_path": str(tmp_path / "pairs"), "tokenizer": str(sft), "shape": "preferences", "batch_size": 4,
         "val_size": 4, "max_length": 32})
    assert (tmp_path / "dpo" / "config.json").exists()


@pytest.mark.parametrize(("config", "targets"), [(TINY_GPT2, ["c_attn"]), (TINY_LLAMA, ["q_proj", "v_proj"]),
                                                  (TINY_QWEN2, ["q_proj", "v_proj"])])
def test_lora_adapts_each_architectures_attention_projections(config, targets):
    lm = build_from_config({**config, **TOKENS}, "causal_lm")
    assert lora_target_modules(lm) == targets
    adapted = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in apply_lora(lm, 4, 8, None).named_parameters()
               if "lora_A" in name}
    assert adapted == set(targets)


def test_lora_targets_that_the_model_lacks_are_a_config_error():
    lm = build_from_config({**TINY_LLAMA, **TOKENS}, "causal_lm")
    with pytest.raises(ConfigError, match=r"c_attn not among the linear layers of this llama model \(down_proj"):
        lora_target_modules(lm, ["c_attn"])
    # a full module path and peft's all-linear are both accepted
    assert lora_target_modules(lm, ["model.layers.0.self_attn.o_proj", "all-linear"]) == [
        "model.layers.0.self_attn.o_proj", "all-linear"]
