"""Bad input through the real console scripts: the last stderr line is one ``error:`` line, exit 2,
no traceback; ``LIGHTNING_RLHF_DEBUG=1`` shows the traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from helpers import TINY_GPT2

REPO = Path(__file__).resolve().parents[1]


def _script(name: str) -> list[str]:
    """The installed console script (``pip install -e .`` puts it on PATH)."""
    return [shutil.which(name) or name]


def _tiny_ppo(tmp: Path, tokenizer_dir: str, imdb_dir: str, reward_dir: str, **init) -> str:
    config = {
        "trainer": {"accelerator": "cpu", "max_steps": 1, "logger": False, "enable_progress_bar": False},
        "model": {"class_path": "lightning_rlhf.modules.PPOModule", "init_args": { "compile_generation": False,
            "policy_name_or_path": None, "policy_config": {**TINY_GPT2, "vocab_size": 300, "eos_token_id": 0,
                                                           "bos_token_id": 0, "pad_token_id": 1},
            "tokenizer_name_or_path": tokenizer_dir, "reward_model": reward_dir, "response_min_tokens": 4,
            "response_max_tokens": 4, "ppo_epochs": 1, "export_dir": str(tmp / "export"), **init}},
        "checkpoint": {"dirpath": str(tmp / "ckpt")},
        "data": {"data_path": imdb_dir, "tokenizer": tokenizer_dir, "shape": "prompts", "batch_size": 8,
                 "val_size": 20, "min_review_chars": 50, "prompt_min_tokens": 2, "prompt_max_tokens": 5},
    }
    path = tmp / f"ppo_{len(list(tmp.glob('ppo_*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory) -> Path:
    """A folder with the repository's configs and nothing built: what a new user has."""
    root = tmp_path_factory.mktemp("fresh")
    shutil.copytree(REPO / "configs", root / "configs")
    return root


def test_bad_inputs_end_with_one_error_line(fresh_checkout, tmp_path, tokenizer_dir, imdb_dir, tiny_classifier_dir):
    clf = tiny_classifier_dir({0: "NEGATIVE", 1: "POSITIVE"})
    tiny = lambda **kw: _tiny_ppo(tmp_path, tokenizer_dir, imdb_dir, clf, **kw)  # noqa: E731
    cases = [  # (command, words the error line must contain)
        (["lightning-rlhf", "fit", "--config", "configs/offline/ppo.yaml"],
         ["'artifacts/offline/sft' does not exist", "lightning-rlhf fit --config configs/offline/sft.yaml"]),
        (["lightning-rlhf", "fit", "--config", "configs/offline/dpo.yaml", "--data.tokenizer", tokenizer_dir,
          "--model.init_args.policy_name_or_path", "null", "--model.init_args.tokenizer_name_or_path", tokenizer_dir,
          "--model.init_args.policy_config", '{"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}'],
         ["preference data 'artifacts/offline/preferences' does not exist", "lightning-rlhf-preferences"]),
        (["lightning-rlhf", "fit", "--config", "configs/offline/reward.yaml"],
         ["'artifacts/offline/tokenizer' does not exist", "configs/offline/sft.yaml"]),
        (["lightning-rlhf", "fit", "--config", "configs/offline/sft.yaml", "--model.init_args.learning_rat", "1"],
         ["option 'learning_rat' is not accepted"]),
        (["lightning-rlhf", "fit", "--config", "configs/offline/sft.yaml", "--model.init_args.learning_rate", "abc"],
         ["learning_rate: expected a float, got 'abc'"]),
        (["lightning-rlhf", "fit", "--config", "no/such.yaml"], ["does not exist"]),
        (["lightning-rlhf", "fit", "--config", "configs/offline/sft.yaml", "--data.tokenizer", tokenizer_dir,
          "--data.data_path", imdb_dir, "--model.init_args.tokenizer_name_or_path", tokenizer_dir,
          "--model.init_args.model_name_or_path", "gpt2"],
         ["both a model to load ('gpt2') and a model config", "the *_config option to null"]),
        (["lightning-rlhf", "fit", "--config", "configs/offline/ppo.yaml", "--ckpt_path", "does/not/exist.ckpt"],
         ["--ckpt_path 'does/not/exist.ckpt' does not exist", "last.ckpt"]),
        (["lightning-rlhf", "fit", "--config", "configs/offline/sft.yaml", "--data.data_path", "artifacts/no-such"],
         ["'artifacts/no-such' is neither a local path", "no such folder"]),
        (["lightning-rlhf", "fit", "--config", tiny(positive_label="HAPPY")], ["no label 'HAPPY'", "POSITIVE"]),
        (["lightning-rlhf", "fit", "--config", tiny(response_min_tokens=60, response_max_tokens=62)],
         ["exceeds the policy's context of 64"]),
        (["lightning-rlhf", "fit", "--config", tiny(num_mini_batches=3)],
         ["num_mini_batches (3) does not divide the batch size (8)"]),
        (["lightning-rlhf", "fit", "--config", tiny(rollout_correction="token_tis", rollout_correction_cap=1.0)],
         ["rollout correction cap must be > 1"]),
        (["lightning-rlhf", "fit", "--config", tiny(advantage_estimator="grpo", dynamic_sampling=True)],
         ["set samples_per_prompt to 2 or more"]),
        (["lightning-rlhf-eval", "--policy", "a=artifacts/none/here", "--reference", "artifacts/none/here",
          "--reward-model", clf, "--data", imdb_dir, "--out", str(tmp_path / "eval")],
         ["'artifacts/none/here' does not exist"]),
        (["lightning-rlhf-eval", "--policy", "a=x"], ["the following arguments are required"]),
        (["lightning-rlhf-pipeline", "--preset", "nope"], ["no preset at 'configs/nope'", "offline"]),
        (["lightning-rlhf-pipeline", "--algo", "ppo,nope"],
         ["--algo nope: 'configs/offline/nope.yaml' is not an RL config", "grpo, ppo, ppo-pairwise, rloo"]),
        (["lightning-rlhf-preferences", "--policy", "artifacts/offline/sft", "--reward-model", clf, "--data", imdb_dir,
          "--out", str(tmp_path / "pairs")], ["'artifacts/offline/sft' does not exist"]),
        (["lightning-rlhf-tokenizer", "--data", "./missing", "--out", str(tmp_path / "tok")],
         ["data path './missing' does not exist"]),
    ]
    env = {**os.environ, "LIGHTNING_RLHF_DEBUG": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "0"}

    def run(case):
        cmd, _ = case
        return subprocess.run(_script(cmd[0]) + cmd[1:], capture_output=True, text=True, timeout=240,
                              cwd=fresh_checkout, env=env)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, cases))
    for (cmd, words), done in zip(cases, results, strict=True):
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        shown = f"{' '.join(cmd)} -> rc {done.returncode}: {last}"
        print(shown)
        assert done.returncode == 2, shown
        assert last.startswith("error: "), shown
        assert all(w in last for w in words), shown
        assert "Traceback" not in done.stderr and "Namespace(" not in done.stderr, shown
    assert not (fresh_checkout / "artifacts" / "offline" / "sft").exists()
    assert not (tmp_path / "pairs").exists(), "a failed preference run leaves no folder behind"


def test_debug_shows_the_traceback(fresh_checkout):
    env = {**os.environ, "LIGHTNING_RLHF_DEBUG": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(_script("lightning-rlhf-pipeline") + ["--preset", "nope"], capture_output=True,
                          text=True, timeout=120, cwd=fresh_checkout, env=env)
    assert done.returncode != 0 and "Traceback" in done.stderr and "MissingInputError" in done.stderr


def test_gpt2_preset_without_the_hub_fails_at_once(fresh_checkout):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LIGHTNING_RLHF_DEBUG": ""}
    done = subprocess.run(_script("lightning-rlhf-pipeline") + ["--preset", "gpt2"], capture_output=True,
                          text=True, timeout=120, cwd=fresh_checkout, env=env)
    last = done.stderr.strip().splitlines()[-1]
    if done.returncode == 0 or "cannot reach" not in last:
        pytest.skip("the hub ids are cached on this machine")
    assert done.returncode == 2
    assert last.startswith("error: the gpt2 preset needs 'gpt2'") and "--preset offline" in last
