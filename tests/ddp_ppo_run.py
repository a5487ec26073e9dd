"""Run by test_ddp.py as a script: PPO (or ESTIMATOR with K samples per prompt) with strategy="ddp" on 2
CPU processes (gloo). Usage: ddp_ppo_run.py OUT TOKENIZER IMDB ESTIMATOR K [dynamic]; ``dynamic``
turns on dynamic sampling with a reward that leaves some groups zero-std, and records each
rank's own count of zero-std groups per step.

Lightning re-launches this script for rank 1. Each rank writes what it saw to <out>/rank<k>.json.
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data.distributed import DistributedSampler

sys.path.insert(0, str(Path(__file__).parent))
from helpers import TINY_GPT2, make_dm, make_ppo  # noqa: E402

import lightning_rlhf.engine.dynamic as dynamic_mod  # noqa: E402
import lightning_rlhf.export as export_mod  # noqa: E402
from lightning_rlhf.callbacks import SampleTableLogger  # noqa: E402

EXPORTS: list[int] = []
_export = export_mod.export_pretrained


def counting_export(*args, **kwargs):
    EXPORTS.append(1)
    return _export(*args, **kwargs)


export_mod.export_pretrained = counting_export
LOCAL_ZERO_STD = [0]
_nonzero = dynamic_mod.nonzero_std_groups


def counting_nonzero(scores, k):
    keep = _nonzero(scores, k)
    LOCAL_ZERO_STD[0] += int((~keep).sum())
    return keep


dynamic_mod.nonzero_std_groups = counting_nonzero


class Probe(L.Callback):
    def __init__(self) -> None:
        self.record: dict = {"steps": []}

    def on_train_start(self, trainer, pl_module):
        sampler = trainer.train_dataloader.sampler
        self.record["indices"] = list(DistributedSampler.__iter__(sampler))
        rollout = pl_module.rollout

        def capture(*args, **kwargs):
            self.last = rollout(*args, **kwargs)
            return self.last

        pl_module.rollout = capture
        update = pl_module.kl_ctl.update

        def record_kl(current_kl, n_steps):
            self.kl_fed = current_kl
            return update(current_kl, n_steps)

        pl_module.kl_ctl.update = record_kl

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        LOCAL_ZERO_STD[0] = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        ro = self.last[0]  # rollout() returns (Rollout, reused forward or None)
        mask = ro.response_mask.double()
        adv = ro.advantages.double()
        self.record["steps"].append({
            "prompts": batch["input_ids"].tolist(),
            "checksum": float(sum(p.double().sum() for p in pl_module.policy.parameters())),
            "kl_coef": pl_module.kl_ctl.value,
            "kl_fed": self.kl_fed,
            "local_kl": ro.kl.sum(-1).mean().item(),
            "logged_score": trainer.callback_metrics["reward/score"].item(),
            "local_score": ro.scores.mean().item(),
            "adv": [float((adv * mask).sum()), float((adv * adv * mask).sum()), float(mask.sum())],
            "local_zero_std": LOCAL_ZERO_STD[0],
            "logged_zero_std": float(trainer.callback_metrics.get("dynamic_sampling/zero_std_groups", -1)),
            "rows": ro.responses.shape[0],
            "group_ids": batch["input_ids"].repeat_interleave(pl_module.hparams.samples_per_prompt, 0).tolist()
            == ro.queries.tolist(),
        })
        self.record["value_params"] = sum(p.numel() for n, p in pl_module.named_parameters() if "value" in n)
        self.record["generator_seed"] = pl_module.sampling.generator.initial_seed()

    def teardown(self, trainer, pl_module, stage):  # after the module's on_fit_end export
        self.record["exports"] = len(EXPORTS)
        Path(out, f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))


if __name__ == "__main__":
    out, tokenizer_dir, imdb_dir, estimator, k = *sys.argv[1:5], int(sys.argv[5])
    dynamic = dict(reward_fn="helpers:has_e", dynamic_sampling=True) if sys.argv[6:] == ["dynamic"] else {}
    tiny = {**TINY_GPT2, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
    # 2 epochs of 1 mini-batch: the first update reuses the rollout forward, the second does not
    module = make_ppo(tiny, tokenizer_dir, **(dict(reward_fn="helpers:char_count", export_dir=f"{out}/export",
                      ppo_epochs=2, advantage_estimator=estimator, samples_per_prompt=k) | dynamic))
    logger = L.pytorch.loggers.TensorBoardLogger(save_dir=f"{out}/logs", name="ddp")
    trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_steps=3 * 2, logger=logger,
                        callbacks=[Probe(), SampleTableLogger(prompts=["a"], max_new_tokens=2,
                                                              every_n_train_steps=1, on_validation=False)],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    torch.set_num_threads(1)
    trainer.fit(module, make_dm(imdb_dir, tokenizer_dir, batch_size=4))
