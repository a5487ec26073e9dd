
import torch
from helpers import ppo_config
from safetensors.torch import load_file
from tb_events import read_events
from transformers import pipeline

from lightning_rlhf.cli import build_cli


def test_ppo_cli_logs_resumes_and_exports(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, tiny_classifier_dir):
    reward_dir = tiny_classifier_dir({0: "NEGATIVE", 1: "POSITIVE"})
    config = ppo_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, reward_dir)
    cli = build_cli(["fit", "--config", str(config)])
    assert cli.trainer.global_step == 3
    scalars, texts = read_events(cli.trainer.log_dir)
    for tag in ("reward/mean", "reward/std", "reward/score", "objective/kl", "objective/kl_coef",
                "policy/entropy", "policy/clipfrac", "policy/approxkl", "loss/value", "value/clipfrac",
                "value/explained_variance", "rollout/response_length", "rollout/eos_fraction",
                "time/generate", "time/score", "time/forward", "time/update"):
        assert len(scalars[tag]) == 3, tag
    assert "| prompt | response | reward |" in texts["samples/text_summary"][0]

    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert not any(k.startswith(("ref_model.", "reward.")) for k in ckpt["state_dict"])
    kl_coef = ckpt["ppo"]["kl_ctl"]["value"]
    expected = 0.2  # Ziegler et al.'s update from each logged KL, 4 samples per iteration, horizon 10000
    for _, kl in sorted(scalars["objective/kl"]):
        expected *= 1 + min(max(kl / 6.0 - 1, -0.2), 0.2) * 4 / 10000
    assert abs(kl_coef - expected) < 1e-9 and kl_coef != 0.2, "the adaptive controller's state is saved"

    resumed = build_cli(["fit", "--config", str(config), "--trainer.max_steps", "5",
                         "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")])
    assert resumed.trainer.global_step == 5
    first_kl_logged = min(read_events(resumed.trainer.log_dir)[0]["objective/kl_coef"])
    assert first_kl_logged[0] >= 3 and abs(first_kl_logged[1] - kl_coef) < 1e-6
    gen = pipeline("text-generation", model=str(tmp_path / "export"))
    assert gen("the movie", max_new_tokens=3)[0]["generated_text"].startswith("the movie")
    exported = load_file(tmp_path / "export" / "model.safetensors")
    assert exported and not any("value_head" in k for k in exported)
