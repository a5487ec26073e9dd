"""Exact-resume checks shared by the PPO, SFT, DPO and reward-model tests: a callback recording a
metric at every step, a Trainer that checkpoints for resuming, and the comparison of two training
states (weights and Adam moments)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class RecordMetric(L.Callback):
    """``values``: the logged ``key`` after every training batch."""

    def __init__(self, key: str) -> None:
        self.key, self.values = key, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(trainer.callback_metrics[self.key].item())


def resume_trainer(tmp_path, steps, record, every=None, **kw) -> L.Trainer:
    """A quiet Trainer of ``steps`` steps whose checkpoints (last, every ``every`` steps) go to ``tmp_path``."""
    # a step checkpoint is taken mid-epoch; one written at an epoch's end resumes at the next epoch
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=every)
    return L.Trainer(max_steps=steps, logger=False, callbacks=[ckpt, record], enable_progress_bar=False,
                     default_root_dir=tmp_path,
                     enable_model_summary=False, num_sanity_val_steps=0, **kw)


def assert_same_training_state(a: L.LightningModule, b: L.LightningModule, opt_a, opt_b) -> None:
    """Same weights and Adam state (moments, step) to 1e-6."""
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6, msg=name)
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for field in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(sa[k][field], sb[k][field], rtol=0, atol=1e-6)
