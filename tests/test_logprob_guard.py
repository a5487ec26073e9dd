"""The sampler/trainer log-prob guard: the sampler's own log-probs, the mismatch by hand, and the
warning when the sampler is not the policy the trainer scores."""

import lightning as L
import pytest
import torch
from helpers import make_dm, make_ppo
from training_state import RecordMetric

import lightning_rlhf.engine.rollout as rollout_mod
from lightning_rlhf.generation import sample_responses
from lightning_rlhf.models.loading import build_from_config
from lightning_rlhf.models.value_head import response_logprobs
from lightning_rlhf.rl.logprobs import logprob_mismatch


def test_logprob_mismatch_by_hand():
    sampler = torch.tensor([[-1.0, -2.0, -3.0]])
    trainer = torch.tensor([[-1.5, -2.0, -1.0]])
    mean, largest = logprob_mismatch(sampler, trainer, torch.tensor([[1, 1, 0]]))
    assert mean.item() == pytest.approx(0.25)  # (0.5 + 0) / 2 tokens; the masked 2.0 is left out
    assert largest.item() == pytest.approx(0.5)


@pytest.mark.parametrize("eos", [None, 0])
def test_sampler_logprobs_match_the_training_forward(tiny_gpt2, eos):
    model = build_from_config({**tiny_gpt2, "initializer_range": 0.3}, "causal_lm", seed=0).eval()
    ids = torch.tensor([[1, 1, 5, 6], [7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    plain = sample_responses(model, ids, mask, 8, 0.7, torch.Generator().manual_seed(0), eos, 1, samples_per_prompt=2)
    tokens, logprobs = sample_responses(model, ids, mask, 8, 0.7, torch.Generator().manual_seed(0), eos, 1,
                                        samples_per_prompt=2, return_logprobs=True)
    assert torch.equal(plain, tokens), "asking for log-probs does not change the draws"
    response_mask = torch.ones_like(tokens) if eos is None else (tokens.eq(eos).long().cumsum(-1)
                                                                 - tokens.eq(eos).long() == 0).long()
    full_ids = torch.cat([ids.repeat_interleave(2, 0), tokens], -1)
    full_mask = torch.cat([mask.repeat_interleave(2, 0), response_mask], -1)
    trainer, _ = response_logprobs(model, full_ids, full_mask, tokens, 0.7)
    mean, largest = logprob_mismatch(logprobs, trainer, response_mask)
    assert largest.item() < 1e-5 and (logprobs[response_mask == 0] == 0).all()


def test_guard_warns_when_weights_change_after_sampling(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, monkeypatch):
    record = RecordMetric("rollout/logprob_diff_mean")

    def run(module):
        L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, default_root_dir=tmp_path, callbacks=[record],
                  enable_progress_bar=False, enable_model_summary=False).fit(module, make_dm(imdb_dir, tokenizer_dir))

    honest = make_ppo(tiny_gpt2, tokenizer_dir)
    run(honest)
    assert max(record.values) < 1e-5 and not honest.mismatch_warned

    original = rollout_mod.sample_responses

    def then_perturb(model, *args, **kw):
        out = original(model, *args, **kw)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        return out

    monkeypatch.setattr(rollout_mod, "sample_responses", then_perturb)
    record.values.clear()
    perturbed = make_ppo(tiny_gpt2, tokenizer_dir)
    with pytest.warns(UserWarning, match="sampler's log-probs differ from the trainer's"):
        run(perturbed)
    assert min(record.values) > perturbed.hparams.logprob_tolerance and perturbed.mismatch_warned
