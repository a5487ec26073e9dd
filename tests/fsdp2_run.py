"""Run by test_sharding.py: one stage on 1 process (no sharding), or on 2 CPU processes (gloo)
with ``fsdp2`` (FSDP2 through ModelParallelStrategy) or ``ddp``.

Usage: fsdp2_run.py MODE OUT TOKENIZER DATA DEVICES STRATEGY [CKPT], MODE one of
  ppo_update  one PPO update on ``fixed_rollout`` (AdamW with a large eps: linear in the gradient);
  ppo_clip    the same with max_grad_norm 1e-3 (clipping on sharded gradients);
  ppo_adamw   two PPO epochs on ``fixed_rollout`` with AdamW as configured for training (lr 1e-4,
              clipping to 1.0): compared between fsdp2 and DDP;
  dpo         one SGD step of DPO on 8 pairs (4 per rank with 2 processes);
  rollout     one PPO iteration sampled from the policy: each rank records its tokens and how many
              FSDP all-gathers the rollout made;
  resume      PPO iterations with a checkpoint per step (CKPT: resume from it; max_steps from OUT's name,
              e.g. run_2.pt); records the weights, KL coefficient and AdamW state at start and end.
Rank 0 writes the parameter change (or the record) to OUT; every rank writes OUT.rank<k>.json.
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))
import torch.distributed.fsdp._fully_shard._fsdp_param_group as param_group  # noqa: E402
from fixed_rollout import LINEAR_ADAM, FixedRolloutPPO  # noqa: E402
from helpers import TINY_GPT2, make_dm, make_ppo  # noqa: E402

from lightning_rlhf.data import IMDBDataModule  # noqa: E402
from lightning_rlhf.modules import DPOModule  # noqa: E402
from lightning_rlhf.sharding import is_sharded  # noqa: E402

ALL_GATHERS = [0]
_all_gather = param_group.foreach_all_gather


def counting_all_gather(*args, **kwargs):
    ALL_GATHERS[0] += 1
    return _all_gather(*args, **kwargs)


param_group.foreach_all_gather = counting_all_gather


def flat(module: torch.nn.Module) -> torch.Tensor:
    """All parameters, gathered when sharded (a collective), as one float64 vector."""
    return torch.cat([(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().reshape(-1).double()
                      for p in module.parameters()])


def flat_parts(module: torch.nn.Module) -> list[torch.Tensor]:
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().double() for p in module.parameters()]


def optimizer_digest(optimizer: torch.optim.Optimizer) -> list[float]:
    """Sums of |exp_avg|, |exp_avg_sq| and the step counts over all parameters (gathered)."""
    sums = [0.0, 0.0, 0.0]
    for state in optimizer.state.values():
        for i, key in enumerate(("exp_avg", "exp_avg_sq", "step")):
            value = state[key]
            value = value.full_tensor() if hasattr(value, "full_tensor") else value
            sums[i] += float(value.double().abs().sum())
    return sums


class SGDDPO(DPOModule):
    def configure_optimizers(self):
        return torch.optim.SGD(self.policy.parameters(), lr=1.0)


class Record(L.Callback):
    """Wraps ``rollout`` to record each rank's tokens and the all-gathers a rollout made."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_start(self, trainer, pl_module):
        self.optimizer_at_start = optimizer_digest(trainer.optimizers[0])
        self.start = {"policy": [float(p.sum()) for p in flat_parts(pl_module.policy)],
                      "kl_coef": pl_module.kl_ctl.value}
        rollout = pl_module.rollout

        def recorded(*args, **kwargs):
            before = ALL_GATHERS[0]
            ro, first = rollout(*args, **kwargs)
            self.steps.append({"responses": ro.responses.tolist(), "logprobs": ro.logprobs.tolist(),
                               "all_gathers": ALL_GATHERS[0] - before,
                               "units": len({id(m._get_fsdp_state()) for m in pl_module.modules()
                                             if hasattr(m, "unshard") and m._get_fsdp_state()._fsdp_param_groups})})
            return ro, first

        pl_module.rollout = recorded


if __name__ == "__main__":
    mode, out, tokenizer_dir, data, devices, strategy = *sys.argv[1:5], int(sys.argv[5]), sys.argv[6]
    ckpt = sys.argv[7] if len(sys.argv) > 7 else None
    tiny = {**TINY_GPT2, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
    torch.set_num_threads(1)
    callbacks: list = []
    extra: dict = {}
    if mode in ("ppo_update", "ppo_clip", "ppo_adamw"):
        optim = {"ppo_update": LINEAR_ADAM, "ppo_clip": {**LINEAR_ADAM, "max_grad_norm": 1e-3},
                 "ppo_adamw": dict(learning_rate=1e-4, max_grad_norm=1.0, ppo_epochs=2, num_mini_batches=1)}[mode]
        module = FixedRolloutPPO(policy_name_or_path=None, policy_config=tiny, tokenizer_name_or_path=tokenizer_dir,
                                 reward_model=None, reward_fn="helpers:char_count", response_min_tokens=16,
                                 response_max_tokens=16, export_dir=f"{out}.export", **optim)
        dm, trained = make_dm(data, tokenizer_dir, batch_size=4), (lambda m: m.policy)
        max_steps = optim["ppo_epochs"]
    elif mode == "dpo":
        module = SGDDPO(policy_name_or_path=None, policy_config=tiny, tokenizer_name_or_path=tokenizer_dir,
                        export_dir=f"{out}.export")
        dm = IMDBDataModule(data_path=data, tokenizer=tokenizer_dir, shape="preferences", batch_size=8 // devices,
                            val_size=4, max_length=64)
        trained, max_steps, extra = (lambda m: m.policy), 1, {"limit_val_batches": 0}
    else:  # rollout, resume
        module = make_ppo(tiny, tokenizer_dir, response_min_tokens=8, response_max_tokens=8,
                          export_dir=f"{out}.export")
        dm, trained = make_dm(data, tokenizer_dir, batch_size=4), (lambda m: m.policy)
        max_steps = int(Path(out).stem.rsplit("_", 1)[-1]) if mode == "resume" else 1
        callbacks.append(Record())
        if mode == "resume":
            callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=f"{out}.ckpt", every_n_train_steps=1,
                                                                 save_top_k=-1, filename="{step}"))
    before = flat(trained(module))
    trainer = L.Trainer(strategy=strategy if devices > 1 else "auto", accelerator="cpu", devices=devices,
                        max_steps=max_steps, logger=False, enable_checkpointing=mode == "resume",
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, **extra)
    trainer.fit(module, dm, ckpt_path=ckpt)
    after = flat(trained(module))
    rank = trainer.global_rank
    record = {"checksum": float(after.sum()), "sharded": is_sharded(trained(module)),
              "steps": callbacks[0].steps if callbacks and isinstance(callbacks[0], Record) else [],
              "optimizer_at_start": getattr(callbacks[0], "optimizer_at_start", None) if callbacks else None,
              "start": getattr(callbacks[0], "start", None) if callbacks else None,
              "end": {"policy": [float(p.sum()) for p in flat_parts(module.policy)],
                      "kl_coef": module.kl_ctl.value} if hasattr(module, "kl_ctl") else None,
              "optimizer_at_end": optimizer_digest(trainer.optimizers[0]) if trainer.optimizers else None}
    Path(f"{out}.rank{rank}.json").write_text(json.dumps(record))
    if trainer.is_global_zero:
        torch.save(after - before if mode != "resume" else after, out)
