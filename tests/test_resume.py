"""Stopping after N steps and resuming for N more equals 2N steps straight."""

import lightning as L
import pytest
import torch
from helpers import make_dm, make_ppo, sft_config
from training_state import RecordMetric, assert_same_training_state, resume_trainer

from lightning_rlhf.data import IMDBDataModule
from lightning_rlhf.modules import SFTModule

# PPO (eager and compiled sampling), a critic-free estimator with k samples per prompt, a
# greedy baseline and a KL loss, and J-BOND (anchor samples, an EMA anchor in the state, demos)
ESTIMATORS = pytest.mark.parametrize("estimator", [
    {}, dict(compile_generation=True),
    dict(advantage_estimator="remax", samples_per_prompt=2, kl_in_reward=False, kl_loss_coef=0.1),
    dict(advantage_estimator="rloo", samples_per_prompt=2, reward_transform="jbond", anchor_ema=0.3,
         reference_samples_per_prompt=2, jeffreys_beta=0.5),
    dict(advantage_estimator="grpo", samples_per_prompt=2, reward_fn="helpers:has_e", dynamic_sampling=True,
         loss_type="dapo", cliprange_high=0.28, rollout_correction="token_tis", scale_rewards="batch"),
], ids=["ppo", "ppo_compiled", "remax_k2_kl_loss", "jbond_anchor", "grpo_dynamic_sampling_dapo"])


@ESTIMATORS
def test_ppo_resume_is_exact(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, estimator):
    kw = dict(ppo_epochs=2, num_mini_batches=2, response_min_tokens=3, response_max_tokens=6,
              reward_fn="helpers:char_count") | estimator
    n = 3 * 4  # 3 iterations of 4 optimizer steps
    straight_rec = RecordMetric("reward/score")
    straight = make_ppo(tiny_gpt2, tokenizer_dir, **kw)
    t_straight = resume_trainer(tmp_path / "a", 2 * n, straight_rec, every=n)
    t_straight.fit(straight, make_dm(imdb_dir, tokenizer_dir))

    first_rec = RecordMetric("reward/score")
    resume_trainer(tmp_path / "b", n, first_rec, every=n).fit(make_ppo(tiny_gpt2, tokenizer_dir, **kw),
                                               make_dm(imdb_dir, tokenizer_dir))
    resumed_rec = RecordMetric("reward/score")
    resumed = make_ppo(tiny_gpt2, tokenizer_dir, **kw)
    t_resumed = resume_trainer(tmp_path / "b", 2 * n, resumed_rec, every=n)
    t_resumed.fit(resumed, make_dm(imdb_dir, tokenizer_dir), ckpt_path=str(tmp_path / "b" / "last.ckpt"))

    assert t_resumed.global_step == 2 * n
    assert first_rec.values + resumed_rec.values == straight_rec.values
    assert resumed.kl_ctl.value == straight.kl_ctl.value != 0.2
    assert_same_training_state(straight, resumed, t_straight.optimizers[0], t_resumed.optimizers[0])
    assert t_resumed.lr_scheduler_configs[0].scheduler.last_epoch == 2 * n


def test_sft_resume_is_exact(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    def parts():
        L.seed_everything(5)
        dm = IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="lm", block_size=16,
                            batch_size=4, val_size=20)
        return SFTModule(model_name_or_path=None, model_config=tiny_gpt2, tokenizer_name_or_path=tokenizer_dir,
                         learning_rate=1e-3, warmup_steps=2, lr_schedule="constant"), dm  # dropout on

    straight_rec = RecordMetric("train/loss")
    straight, dm = parts()
    t_straight = resume_trainer(tmp_path / "a", 10, straight_rec, every=5, limit_val_batches=0)
    t_straight.fit(straight, dm)
    first_rec = RecordMetric("train/loss")
    resume_trainer(tmp_path / "b", 5, first_rec, every=5, limit_val_batches=0).fit(*parts())
    resumed_rec = RecordMetric("train/loss")
    resumed, dm = parts()
    torch.manual_seed(123)  # a different global RNG must not matter
    t_resumed = resume_trainer(tmp_path / "b", 10, resumed_rec, every=5, limit_val_batches=0)
    t_resumed.fit(resumed, dm, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert first_rec.values + resumed_rec.values == straight_rec.values
    assert_same_training_state(straight, resumed, t_straight.optimizers[0], t_resumed.optimizers[0])


def _weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_sft_extends_a_finished_run_exactly_through_the_cli(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    """max_steps 10, then max_steps 20 from the end-of-fit last.ckpt == 20 straight.

    Lightning records a run stopped by max_steps mid-epoch as a finished epoch; the loader's own
    position must win, also across the epoch boundary that steps 10-20 cross here.
    """

    from lightning_rlhf.cli import build_cli

    def fit(name: str, steps: int, *extra: str):
        (tmp_path / name).mkdir(exist_ok=True)
        config = sft_config(tmp_path / name, tiny_gpt2, tokenizer_dir, imdb_dir)
        args = ["fit", "--config", str(config), "--seed_everything", "3", "--trainer.max_steps", str(steps),
                "--trainer.limit_val_batches", "0", "--trainer.callbacks", "[]",
                "--data.max_train_samples", "20", "--model.init_args.lr_schedule", "constant", *extra]
        return build_cli(args).trainer

    straight = fit("a", 20)
    assert straight.num_training_batches < 20, "the runs cross an epoch boundary"
    first = fit("b", 10)
    assert first.num_training_batches > 10, "the first run stops mid-epoch"
    ckpt = torch.load(tmp_path / "b" / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 10 and ckpt["epoch"] == 1, "Lightning calls the stopped epoch finished"
    resumed = fit("b", 20, "--ckpt_path", str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    assert resumed.global_step == 20
    a, b = _weights(tmp_path / "a" / "export"), _weights(tmp_path / "b" / "export")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


@ESTIMATORS
def test_ppo_extends_a_finished_run_exactly(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir, estimator):
    kw = dict(ppo_epochs=1, response_min_tokens=3, response_max_tokens=6, reward_fn="helpers:char_count") | estimator

    def small_dm():
        return IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="prompts", batch_size=8,
                              val_size=20, min_review_chars=50, prompt_min_tokens=2, prompt_max_tokens=5,
                              max_train_samples=40)
    straight_rec = RecordMetric("reward/score")
    straight = make_ppo(tiny_gpt2, tokenizer_dir, **kw)
    t_straight = resume_trainer(tmp_path / "a", 8, straight_rec)
    t_straight.fit(straight, small_dm())
    assert t_straight.num_training_batches < 8, "the runs cross an epoch boundary"

    first_rec = RecordMetric("reward/score")
    resume_trainer(tmp_path / "b", 4, first_rec).fit(make_ppo(tiny_gpt2, tokenizer_dir, **kw),
                                               small_dm())
    resumed_rec = RecordMetric("reward/score")
    resumed = make_ppo(tiny_gpt2, tokenizer_dir, **kw)
    t_resumed = resume_trainer(tmp_path / "b", 8, resumed_rec)
    t_resumed.fit(resumed, small_dm(), ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert first_rec.values + resumed_rec.values == straight_rec.values
    assert_same_training_state(straight, resumed, t_straight.optimizers[0], t_resumed.optimizers[0])
