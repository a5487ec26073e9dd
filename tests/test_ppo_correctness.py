"""PPO inputs that must be refused, statistics of skipped updates, and the real reward path."""

import lightning as L
import pytest
import torch
from helpers import make_dm, make_ppo

import lightning_rlhf.engine.update as update_mod


def _fit(module, dm, tmp_path, steps=1):
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    return trainer


@pytest.mark.parametrize("kw, message", [
    (dict(num_mini_batches=3), r"num_mini_batches \(3\) does not divide the batch size \(8\)"),
    (dict(num_mini_batches=2, micro_batch_size=3),
     r"micro_batch_size \(3\) does not divide the mini-batch of 4 rows \(batch size 8 / num_mini_batches 2\)"),
])
def test_uneven_mini_or_micro_batches_are_refused_at_setup(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, kw, message):
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count", **kw)
    started = []
    module.rollout = lambda *a, **k: started.append(1)
    with pytest.raises(ValueError, match=message):
        _fit(module, make_dm(imdb_dir, tokenizer_dir, batch_size=8), tmp_path)
    assert not started, "refused before the first rollout"


def test_statistics_come_from_applied_updates_only(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, monkeypatch):
    """Epoch 1's mini-batch (ratio exactly 1, approxkl 0) is applied; epoch 2's is skipped by the
    ratio guard, and its non-zero approxkl must not reach the logs."""
    calls = []
    real_sum = update_mod.global_sum

    def second_is_huge(x):
        calls.append(1)
        return real_sum(x) if len(calls) == 1 else x + 1e9

    monkeypatch.setattr(update_mod, "global_sum", second_is_huge)
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count", ppo_epochs=2)
    trainer = _fit(module, make_dm(imdb_dir, tokenizer_dir), tmp_path)
    assert module.ratio_skips == 1 and trainer.global_step == 1
    metrics = trainer.callback_metrics
    assert metrics["policy/approxkl"].item() == 0.0 and metrics["policy/clipfrac"].item() == 0.0
    assert metrics["guard/ratio_skips"].item() == 1.0


@pytest.mark.parametrize("classifier", ["wordpiece", "same_vocabulary"])
def test_reward_classifier_scores_the_decoded_text(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path,
                                                   wordpiece_classifier_dir, tiny_classifier_dir, classifier):
    """The default path of real users, a byte-level BPE policy scored by a WordPiece classifier
    that adds [CLS]/[SEP] itself, and a classifier that shares the policy's vocabulary, score
    exactly the decoded prompt + response text, also for responses that stop at a mid-response EOS."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward_dir = (wordpiece_classifier_dir if classifier == "wordpiece"
                  else tiny_classifier_dir({0: "NEGATIVE", 1: "POSITIVE"}))
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn=None, reward_model=reward_dir,
                      stop_at_eos=True, temperature=3.0, response_min_tokens=12, response_max_tokens=12)
    tok, eos = module.tokenizer, module.tokenizer.eos_token_id
    with torch.no_grad():  # make EOS likely, so some responses stop early: a hidden bias along EOS's row
        lm = module.policy.lm
        direction = torch.randn(lm.config.n_embd, generator=torch.Generator().manual_seed(0))
        direction /= direction.norm()
        lm.transformer.ln_f.bias += 3 * direction
        lm.lm_head.weight[eos] += 3 * direction
    dm = make_dm(imdb_dir, tokenizer_dir, batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    ro, _ = module.rollout(batch["input_ids"], batch["attention_mask"], {})
    assert (ro.response_mask.sum(-1) < 12).any(), "some responses stopped at EOS"

    texts = []
    for q, qm, r, rm in zip(ro.queries, ro.query_mask, ro.responses, ro.response_mask, strict=True):
        texts.append(tok.decode(q[qm.bool()], skip_special_tokens=True) + tok.decode(r[rm.bool()],
                                                                                    skip_special_tokens=True))
    clf_tok = AutoTokenizer.from_pretrained(reward_dir)
    clf = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    enc = clf_tok(texts, padding=True, truncation=True, return_tensors="pt")
    if classifier == "wordpiece":
        assert (enc["input_ids"][:, 0] == clf_tok.cls_token_id).all()
    with torch.no_grad():
        expected = clf(**enc).logits[:, 1]
    torch.testing.assert_close(ro.scores, expected, atol=1e-5, rtol=0)

    trainer = _fit(module, make_dm(imdb_dir, tokenizer_dir), tmp_path, steps=2)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["reward/score"])
