"""Run by test_ddp.py: one DPO step with 1 process (8 pairs) or 2 (DDP, gloo, 4 pairs each).

Usage: ddp_dpo_run.py OUT TOKENIZER PAIRS DEVICES. Rank 0 saves the gradient it steps with (after
DDP's averaging) to OUT; every rank writes its weight checksum to OUT.rank<k>.json.
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import TINY_GPT2  # noqa: E402

from lightning_rlhf.data import IMDBDataModule  # noqa: E402
from lightning_rlhf.modules import DPOModule  # noqa: E402


class Probe(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = torch.cat([p.grad.reshape(-1) for p in pl_module.policy.parameters() if p.grad is not None])
        if trainer.is_global_zero:
            torch.save(grads, out)

    def on_train_end(self, trainer, pl_module):
        checksum = float(sum(p.double().sum() for p in pl_module.policy.parameters()))
        Path(f"{out}.rank{trainer.global_rank}.json").write_text(json.dumps({"checksum": checksum}))


if __name__ == "__main__":
    out, tokenizer_dir, pairs, devices = *sys.argv[1:4], int(sys.argv[4])
    tiny = {**TINY_GPT2, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
    torch.set_num_threads(1)
    module = DPOModule(policy_name_or_path=None, policy_config=tiny, tokenizer_name_or_path=tokenizer_dir,
                       learning_rate=1e-3, export_dir=f"{out}.export")
    dm = IMDBDataModule(data_path=pairs, tokenizer=tokenizer_dir, shape="preferences", batch_size=8 // devices,
                        val_size=4, max_length=64)
    trainer = L.Trainer(strategy="ddp" if devices > 1 else "auto", accelerator="cpu", devices=devices, max_steps=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[Probe()])
    trainer.fit(module, dm)
