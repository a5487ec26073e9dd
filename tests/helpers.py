"""What several test modules share, imported by name (``from helpers import make_ppo``); the
fixtures built from it are in conftest.py.

Tiny model configs and toy reviews; rule-based rewards, which configs name as ``reward_fn:
"helpers:char_count"`` (pytest puts tests/ on ``sys.path``: rootdir conftest, default import
mode; the ddp_*_run.py scripts add it themselves); the PPO module, the prompt data module and the
``lightning-rlhf fit`` configs (tiny SFT, tiny PPO) that many tests start from. Heavy imports stay
inside the functions, so that conftest.py, which imports this module, stays light.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from lightning_rlhf.data import IMDBDataModule
    from lightning_rlhf.modules import DPOModule, PPOModule

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

POSITIVE = ["great", "wonderful", "loved", "brilliant", "superb", "moving", "funny", "best"]
NEGATIVE = ["awful", "boring", "hated", "terrible", "dull", "worst", "weak", "mess"]
NEUTRAL = ["the", "movie", "film", "plot", "actor", "scene", "story", "was", "and", "a", "it", "this"]

TINY_GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64}
# Llama and Qwen2 (rotary positions, RMSNorm, grouped-query attention, SwiGLU; Qwen2 adds q/k/v biases)
TINY_LLAMA = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "hidden_size": 32, "intermediate_size": 64, "max_position_embeddings": 64}
TINY_QWEN2 = {**TINY_LLAMA, "model_type": "qwen2"}
TINY_DISTILBERT = {"model_type": "distilbert", "vocab_size": 300, "dim": 32, "n_layers": 1, "n_heads": 2,
                   "hidden_dim": 64, "max_position_embeddings": 128, "pad_token_id": 1}


def make_reviews(n: int, seed: int = 0) -> list[dict]:
    """Separable toy reviews: sentiment words decide the label; ``<br />`` tags sprinkled in."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = POSITIVE if label else NEGATIVE
        body = [rng.choice(NEUTRAL if rng.random() < 0.6 else words) for _ in range(rng.randint(30, 50))]
        text = " ".join(body[:10]) + " <br /><br /> " + " ".join(body[10:])
        rows.append({"text": text, "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- rule-based rewards (reward_fn: "helpers:<name>") ------------------------------------------
def e_fraction(prompts, responses):
    """Rule-based reward: share of the response's characters that are the letter 'e'."""
    return [r.count("e") / max(1, len(r)) for r in responses]


def char_count(prompts, responses):
    """A reward that varies from sample to sample at random init."""
    return [len(r) / 10 for r in responses]


def zero_reward(prompts, responses):
    return [0.0 for _ in responses]


def has_e(prompts, responses):
    """1 when the response has an 'e', else 0: many groups of a few samples score all the same."""
    return [float("e" in r) for r in responses]


def length_reward(prompts, responses):
    import torch

    return torch.tensor([len(r) / 10 for r in responses])


NAN_CALLS = {"n": 0}  # set n to 0 before a run that uses nan_after_two_calls


def nan_after_two_calls(prompts, responses):
    """Finite scores for the first two calls, NaN after (the non-finite guard's test)."""
    NAN_CALLS["n"] += 1
    value = 0.5 if NAN_CALLS["n"] <= 2 else float("nan")
    return [value + len(r) / 100 for r in responses]


# -- modules and configs -----------------------------------------------------------------------
def make_ppo(tiny_gpt2: dict, tokenizer_dir: str, **kw) -> PPOModule:
    """A tiny PPOModule scored by ``e_fraction``, 6-token responses, eager sampling; ``kw`` overrides."""
    from lightning_rlhf.modules import PPOModule

    args = dict(policy_name_or_path=None, policy_config=tiny_gpt2,
                tokenizer_name_or_path=tokenizer_dir,
                reward_model=None, reward_fn="helpers:e_fraction", response_min_tokens=6,
                response_max_tokens=6, ppo_epochs=1, learning_rate=1e-3,
                compile_generation=False)  # compiled sampling has its own tests (test_compiled_sampling)
    args.update(kw)
    return PPOModule(**args)


def engine_setup(tiny_gpt2: dict, tokenizer_dir: str, value_head: bool = True, **update):
    """The engine's pieces without a Trainer: a tiny policy (with a value head unless
    ``value_head`` is False), its reference, the length reward, 5-token responses at T=1 and 4
    prompts; ``update`` sets ``UpdateConfig``. Returns (models, cfg, queries, query_mask)."""
    from lightning_rlhf.engine import EngineConfig, RolloutModels, SamplingConfig, UpdateConfig
    from lightning_rlhf.models.loading import disable_dropout, load_causal_lm, load_tokenizer
    from lightning_rlhf.models.value_head import PolicyWithValueHead
    from lightning_rlhf.rewards import ScoreNormalizer

    tokenizer = load_tokenizer(tokenizer_dir)
    policy = PolicyWithValueHead(load_causal_lm(None, tiny_gpt2, seed=0), value_head=value_head)
    disable_dropout(policy)
    reference = load_causal_lm(None, tiny_gpt2, seed=0).requires_grad_(False)
    models = RolloutModels(policy, reference, None, tokenizer, length_reward, ScoreNormalizer(False, None))
    cfg = EngineConfig(SamplingConfig(response_min_tokens=5, response_max_tokens=5, temperature=1.0,
                                      compile_generation=False), update=UpdateConfig(**update))
    prompts = tokenizer(["a b c", "d e", "f", "g h i j"], padding=True, return_tensors="pt")
    return models, cfg, prompts["input_ids"], prompts["attention_mask"]


def make_dm(imdb_dir: str, tokenizer_dir: str, batch_size: int = 8) -> IMDBDataModule:
    """Prompts of 2-5 tokens from the toy reviews."""
    from lightning_rlhf.data import IMDBDataModule

    return IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="prompts",
                          batch_size=batch_size, val_size=20, min_review_chars=50,
                          prompt_min_tokens=2, prompt_max_tokens=5)


def preference_pairs(tmp_path: Path, n: int = 48, best_of: int | None = None) -> str:
    """A separable toy preference set: chosen responses praise, rejected ones pan; with
    ``best_of`` the rows say they are the best and worst of that many samples (--pairs best_worst).
    Returns the folder (``tmp_path/pairs`` or ``tmp_path/pairs-best-of-<n>``)."""
    rows = [{"prompt": "the movie", "chosen": " was great and wonderful", "rejected": " was awful and boring"}
            if i % 2 else {"prompt": "this film", "chosen": " loved it best", "rejected": " hated it worst"}
            for i in range(n)]
    if best_of is not None:
        rows = [{**r, "pairs": "best_worst", "samples_per_prompt": best_of} for r in rows]
    name = "pairs" if best_of is None else f"pairs-best-of-{best_of}"
    return str(write_jsonl(tmp_path / name / "train.jsonl", rows).parent)


def make_preference_dm(data: str, tokenizer_dir: str, batch_size: int = 4, **kw) -> IMDBDataModule:
    from lightning_rlhf.data import IMDBDataModule

    return IMDBDataModule(data_path=data, tokenizer=tokenizer_dir, shape="preferences", batch_size=batch_size,
                          val_size=8, max_length=64, **kw)


def make_dpo(tiny_gpt2: dict, tokenizer_dir: str, **kw) -> DPOModule:
    """A tiny DPOModule (learning rate 1e-3 unless ``kw`` says otherwise)."""
    from lightning_rlhf.modules import DPOModule

    return DPOModule(policy_name_or_path=None, policy_config=tiny_gpt2, tokenizer_name_or_path=tokenizer_dir,
                     **{"learning_rate": 1e-3, **kw})


def sft_config(tmp_path: Path, tiny_gpt2: dict, tokenizer_dir: str, imdb_dir: str) -> Path:
    """``tmp_path/sft.yaml``: a 6-step tiny SFT fit config (logs, checkpoints and export in ``tmp_path``)."""
    config = {
        "seed_everything": 7,
        "trainer": {
            "accelerator": "cpu", "max_steps": 6, "val_check_interval": 3, "limit_val_batches": 2,
            "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp_path / "logs"), "name": "sft"}},
            "callbacks": [{"class_path": "lightning_rlhf.callbacks.SampleTableLogger",
                           "init_args": {"max_new_tokens": 4, "prompts": ["the movie", "a"]}}],
        },
        "model": {"class_path": "lightning_rlhf.modules.SFTModule", "init_args": {
            "model_name_or_path": None, "model_config": tiny_gpt2, "tokenizer_name_or_path": tokenizer_dir,
            "learning_rate": 1e-3, "warmup_steps": 1, "export_dir": str(tmp_path / "export")}},
        "checkpoint": {"monitor": "val/loss", "mode": "min", "dirpath": str(tmp_path / "ckpt")},
        "data": {"data_path": imdb_dir, "tokenizer": tokenizer_dir, "shape": "lm",
                 "block_size": 32, "batch_size": 4, "val_size": 20, "max_train_samples": 60},
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def ppo_config(tmp_path: Path, tiny_gpt2: dict, tokenizer_dir: str, imdb_dir: str, reward_dir: str) -> Path:
    """``tmp_path/ppo.yaml``: a 3-step tiny PPO fit config scored by the classifier at ``reward_dir``."""
    config = {
        "seed_everything": 3,
        "trainer": {
            "accelerator": "cpu", "max_steps": 3, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp_path / "logs"), "name": "ppo"}},
            "callbacks": [{"class_path": "lightning_rlhf.callbacks.SampleTableLogger",
                           "init_args": {"max_new_tokens": 4, "prompts": ["the movie", "a"],
                                         "every_n_train_steps": 1, "on_validation": False}}],
        },
        "model": {"class_path": "lightning_rlhf.modules.PPOModule", "init_args": {"compile_generation": False,
            "policy_name_or_path": None, "policy_config": tiny_gpt2, "tokenizer_name_or_path": tokenizer_dir,
            "reward_model": reward_dir, "response_min_tokens": 3, "response_max_tokens": 5,
            "ppo_epochs": 1, "learning_rate": 1e-3, "export_dir": str(tmp_path / "export")}},
        "checkpoint": {"dirpath": str(tmp_path / "ckpt")},
        "data": {"data_path": imdb_dir, "tokenizer": tokenizer_dir, "shape": "prompts",
                 "batch_size": 4, "val_size": 20, "min_review_chars": 50},
    }
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
