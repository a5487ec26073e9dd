"""Run by test_reward_model.py: one pairwise reward-model step with 1 process (8 pairs) or 2 (DDP,
gloo, 4 pairs each), then a validation pass over 8 held-out pairs. In float64: the ranks pad
their pairs to other widths, and float32's rounding of the tiny model's small gradient would
differ by more than the comparison allows.

Usage: ddp_reward_pairwise_run.py OUT TOKENIZER PAIRS DEVICES. Rank 0 saves the gradient it steps
with (after DDP's averaging) to OUT; every rank writes its weight checksum and the validation
metrics it logged to OUT.rank<k>.json.
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import TINY_DISTILBERT  # noqa: E402

from lightning_rlhf.data import IMDBDataModule  # noqa: E402
from lightning_rlhf.modules import RewardModelModule  # noqa: E402


class Probe(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = torch.cat([p.grad.reshape(-1) for p in pl_module.model.parameters() if p.grad is not None])
        if trainer.is_global_zero:
            torch.save(grads, out)


if __name__ == "__main__":
    out, tokenizer_dir, pairs, devices = *sys.argv[1:4], int(sys.argv[4])
    torch.set_num_threads(1)
    no_dropout = {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0}  # ranks draw their own
    module = RewardModelModule(model_name_or_path=None, model_config={**TINY_DISTILBERT, **no_dropout},
                               tokenizer_name_or_path=tokenizer_dir, objective="pairwise",
                               center_rewards_coefficient=0.01, learning_rate=1e-3, warmup_steps=0,
                               export_dir=f"{out}.export")
    dm = IMDBDataModule(data_path=pairs, tokenizer=tokenizer_dir, shape="pairwise", batch_size=8 // devices,
                        val_size=8, max_length=64)
    trainer = L.Trainer(strategy="ddp" if devices > 1 else "auto", accelerator="cpu", devices=devices, max_steps=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, precision="64-true",
                        enable_model_summary=False, limit_val_batches=0, callbacks=[Probe()])
    trainer.fit(module, dm)
    dm.hparams.batch_size = 2  # validation in batches of 2 pairs per rank, every batch
    trainer.limit_val_batches = 1.0
    metrics = trainer.validate(module, dm, verbose=False)[0]
    checksum = float(sum(p.double().sum() for p in module.model.parameters()))
    Path(f"{out}.rank{trainer.global_rank}.json").write_text(json.dumps({"checksum": checksum, **metrics}))
