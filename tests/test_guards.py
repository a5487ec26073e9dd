"""Non-finite guard and ratio-explosion skips in PPO."""

import lightning as L
import pytest
import torch
from helpers import NAN_CALLS, make_dm, make_ppo
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_rlhf.callbacks import InterruptCheckpoint
from lightning_rlhf.guard import NonFiniteGuard


def test_guard_counts_and_stops():
    guard = NonFiniteGuard(max_consecutive=3)
    with pytest.warns(UserWarning, match="step 7: nan loss; skipped"):
        guard.bad(7, "nan loss")
    guard.good()
    with pytest.warns(UserWarning):
        guard.bad(8, "x")
        guard.bad(9, "x")
    assert guard.skipped == 3 and guard.consecutive == 2
    with pytest.warns(UserWarning), pytest.raises(FloatingPointError, match="3 consecutive non-finite"):
        guard.bad(10, "x")


def test_nonfinite_reward_skips_then_stops_with_last_good_checkpoint(tiny_gpt2, tokenizer_dir, imdb_dir,
                                                                     tmp_path):
    NAN_CALLS["n"] = 0
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:nan_after_two_calls",
                      max_bad_steps=3)
    ckpt_dir = tmp_path / "ckpt"
    trainer = L.Trainer(max_steps=20, logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
                        callbacks=[ModelCheckpoint(dirpath=ckpt_dir), InterruptCheckpoint()])
    with pytest.warns(UserWarning, match="non-finite score"), \
            pytest.raises(FloatingPointError, match="3 consecutive non-finite steps"):
        trainer.fit(module, make_dm(imdb_dir, tokenizer_dir))
    assert trainer.global_step == 2, "two good updates, then only skipped ones"
    assert module.guard.skipped == 3
    saved = torch.load(ckpt_dir / "interrupted.ckpt", weights_only=False)
    assert saved["global_step"] == 2
    for name, value in module.state_dict().items():
        torch.testing.assert_close(saved["state_dict"][name], value, rtol=0, atol=0)
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def test_ratio_explosion_skips_the_minibatch(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    # a threshold below 1 makes every mini-batch "explode": nothing may be stepped
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count", ratio_threshold=0.5,
                      num_mini_batches=2)
    trainer = L.Trainer(max_steps=4, max_epochs=1, limit_train_batches=2, logger=False,
                        default_root_dir=tmp_path, enable_progress_bar=False, enable_checkpointing=False)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer.fit(module, make_dm(imdb_dir, tokenizer_dir))
    assert module.ratio_skips == 4 and trainer.global_step == 0
    assert trainer.callback_metrics["guard/ratio_skips"] == 4
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_nonfinite_loss_skips_the_update(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, monkeypatch):
    import lightning_rlhf.engine.update as update_mod

    original = update_mod.ppo_loss

    def nan_loss(*args):
        out = original(*args)
        return out._replace(loss=out.loss * float("nan"))

    monkeypatch.setattr(update_mod, "ppo_loss", nan_loss)
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count", max_bad_steps=10)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = L.Trainer(max_steps=1, max_epochs=1, limit_train_batches=2, logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_checkpointing=False)
    with pytest.warns(UserWarning, match="non-finite PPO loss"):
        trainer.fit(module, make_dm(imdb_dir, tokenizer_dir))
    assert trainer.global_step == 0 and module.guard.skipped == 2
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
