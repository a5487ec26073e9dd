"""Run by test_ddp.py: one PPO update on ``fixed_rollout`` with 1 process or 2 (DDP, gloo).

Usage: ddp_update_run.py OUT TOKENIZER IMDB DEVICES MODE [MICRO], MODE a key of fixed_rollout.MODES.
Rank 0 saves the parameter change to OUT;
with DDP each rank writes how many gradient buckets it all-reduced to OUT.rank<k>.allreduces.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

sys.path.insert(0, str(Path(__file__).parent))
from fixed_rollout import LINEAR_ADAM, MODES, FixedRolloutPPO, flat_params  # noqa: E402
from helpers import TINY_GPT2, make_dm  # noqa: E402

ALLREDUCES = [0]


def counting_allreduce(state, bucket):
    ALLREDUCES[0] += 1
    return allreduce_hook(state, bucket)


class CountAllReduces(L.Callback):
    """Lightning registers ``ddp_comm_hook`` on CUDA only; on CPU the hook goes on by hand."""

    def on_train_start(self, trainer, pl_module):
        trainer.strategy.model.register_comm_hook(None, counting_allreduce)


if __name__ == "__main__":
    out, tokenizer_dir, imdb_dir, devices, mode = *sys.argv[1:4], int(sys.argv[4]), sys.argv[5]
    micro = int(sys.argv[6]) if len(sys.argv) > 6 else None
    tiny = {**TINY_GPT2, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
    torch.set_num_threads(1)
    module = FixedRolloutPPO(policy_name_or_path=None, policy_config=tiny, tokenizer_name_or_path=tokenizer_dir,
                             reward_model=None, reward_fn="helpers:char_count", response_min_tokens=16,
                             response_max_tokens=16, export_dir=f"{out}.export", **LINEAR_ADAM,
                             micro_batch_size=micro, **MODES[mode])
    before = flat_params(module)
    strategy = "ddp" if devices > 1 else "auto"
    trainer = L.Trainer(strategy=strategy, accelerator="cpu", devices=devices, max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[CountAllReduces()] if devices > 1 else [])
    trainer.fit(module, make_dm(imdb_dir, tokenizer_dir, batch_size=4 // module.hparams.samples_per_prompt))
    if devices > 1:
        Path(f"{out}.rank{trainer.global_rank}.allreduces").write_text(str(ALLREDUCES[0]))
    if trainer.is_global_zero:
        torch.save(flat_params(module) - before, out)
