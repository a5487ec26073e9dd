import lightning as L
import torch
from transformers import pipeline

from lightning_rlhf.data import IMDBDataModule
from lightning_rlhf.modules import SFTModule


def _fit(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, steps, **trainer_kw):
    L.seed_everything(0)
    dm = IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="lm", block_size=32,
                        batch_size=8, val_size=20, max_train_samples=40)
    module = SFTModule(model_name_or_path=None, model_config=tiny_gpt2, tokenizer_name_or_path=tokenizer_dir,
                       learning_rate=3e-3, warmup_steps=2, export_dir=str(tmp_path / "export"))
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, **trainer_kw)
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer.callbacks.append(Record())
    trainer.fit(module, dm)
    return module, losses


def test_sft_lowers_the_loss_and_exports_for_pipeline(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    module, losses = _fit(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, steps=40)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.0, (first, last)
    gen = pipeline("text-generation", model=str(tmp_path / "export"))
    out = gen("the movie was", max_new_tokens=5, do_sample=False)
    assert out[0]["generated_text"].startswith("the movie was")


def test_padding_is_ignored_in_the_loss(tiny_gpt2, tokenizer_dir):
    module = SFTModule(model_name_or_path=None, model_config=tiny_gpt2, tokenizer_name_or_path=tokenizer_dir).eval()
    ids = torch.randint(2, 300, (1, 6))
    plain, _ = module._loss({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    padded_ids = torch.cat([torch.full((1, 3), 1), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
    padded, n = module._loss({"input_ids": padded_ids, "attention_mask": mask, "labels": padded_ids})
    assert n == 5
    torch.testing.assert_close(plain, padded, atol=1e-5, rtol=1e-5)


def test_sft_runs_under_bf16_mixed(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    _, losses = _fit(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, steps=3, precision="bf16-mixed")
    _, fp32 = _fit(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path / "fp32", steps=3)
    assert len(losses) == 3
    assert losses != fp32, "bf16 autocast was on"
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(fp32), rtol=0, atol=0.05)
