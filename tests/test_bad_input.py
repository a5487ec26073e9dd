"""Bad input gets an error that names the problem and the fix (the rest live beside their features)."""

import lightning as L
import pytest
from helpers import make_dm, make_ppo
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_rlhf.data import IMDBDataModule
from lightning_rlhf.models.loading import load_causal_lm
from lightning_rlhf.modules import SFTModule


def _trainer(tmp_path, steps=1, **kw):
    return L.Trainer(max_steps=steps, logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


def _sft(tiny_gpt2, tokenizer_dir):
    return SFTModule(model_name_or_path=None, model_config=tiny_gpt2, tokenizer_name_or_path=tokenizer_dir)


def _lm_data(imdb_dir, tokenizer_dir):
    return IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="lm", block_size=16, val_size=20)


def test_checkpoint_of_another_module_type(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    _trainer(tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "sft")], limit_val_batches=0).fit(
        _sft(tiny_gpt2, tokenizer_dir), _lm_data(imdb_dir, tokenizer_dir))
    with pytest.raises(ValueError, match="not written by PPOModule"):
        _trainer(tmp_path, steps=2).fit(make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count"),
                                        make_dm(imdb_dir, tokenizer_dir),
                                        ckpt_path=str(next((tmp_path / "sft").glob("*.ckpt"))))
    ppo = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count")
    _trainer(tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ppo")]).fit(ppo, make_dm(imdb_dir, tokenizer_dir))
    with pytest.raises(ValueError, match="not written by SFTModule"):
        _trainer(tmp_path, steps=2, limit_val_batches=0).fit(
            _sft(tiny_gpt2, tokenizer_dir), _lm_data(imdb_dir, tokenizer_dir),
            ckpt_path=str(next((tmp_path / "ppo").glob("*.ckpt"))))


def test_export_folder_missing_files(tmp_path, tiny_policy_dirs):
    folder = tmp_path / "partial"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json.*not a `save_pretrained` export"):
        load_causal_lm(str(folder))
    (folder / "config.json").write_text((tmp_path / "before" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no weights.*export it again"):
        load_causal_lm(str(folder))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm("./artifacts/never/exported")


def test_prompt_range_larger_than_context(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    dm = IMDBDataModule(data_path=imdb_dir, tokenizer=tokenizer_dir, shape="prompts", val_size=20,
                        min_review_chars=50, prompt_min_tokens=2, prompt_max_tokens=62)
    with pytest.raises(ValueError, match=r"prompt_max_tokens \(62\) \+ response_max_tokens \(6\) exceeds"):
        _trainer(tmp_path).fit(make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count"), dm)


def test_data_tokenizer_must_be_the_models(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    from helpers import make_reviews

    from lightning_rlhf.tokenizer_training import train_bpe_tokenizer

    other = train_bpe_tokenizer(iter(r["text"] for r in make_reviews(100)), vocab_size=280)
    other.save_pretrained(tmp_path / "other")
    dm = IMDBDataModule(data_path=imdb_dir, tokenizer=str(tmp_path / "other"), shape="lm", block_size=16,
                        val_size=20)
    with pytest.raises(ValueError, match="set data.tokenizer to the model's tokenizer"):
        _trainer(tmp_path).fit(_sft(tiny_gpt2, tokenizer_dir), dm)
