import lightning as L
import pytest
import torch
from helpers import make_dm, make_ppo

import lightning_rlhf.engine as engine
import lightning_rlhf.engine.update as update_mod
from lightning_rlhf.rl.logprobs import logprobs_from_logits


def test_logprobs_with_left_padding_equal_unpadded(tiny_gpt2, tokenizer_dir):
    module = make_ppo(tiny_gpt2, tokenizer_dir)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])  # 3 query + 3 response tokens
    padded = torch.cat([torch.full((1, 4), 1), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones_like(ids)], dim=1)
    logits_a, values_a = module.policy(ids, torch.ones_like(ids), 3)
    logits_b, values_b = module.policy(padded, mask, 3)
    resp = ids[:, 3:]
    torch.testing.assert_close(logprobs_from_logits(logits_a, resp, 0.7),
                               logprobs_from_logits(logits_b, resp, 0.7), atol=1e-5, rtol=0)
    torch.testing.assert_close(values_a, values_b, atol=1e-5, rtol=0)
    assert values_a.abs().max() == 0, "value head starts at zero"


def test_frozen_models_are_not_checkpointed(tiny_gpt2, tokenizer_dir, tiny_classifier_dir):
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn=None,
                      reward_model=tiny_classifier_dir({0: "NEGATIVE", 1: "POSITIVE"}))
    keys = module.state_dict().keys()
    assert any(k.startswith("policy.value_head") for k in keys)
    assert not any(k.startswith(("ref_model.", "reward.")) for k in keys)
    assert not any(p.requires_grad for p in module.ref_model.parameters())


def test_first_minibatch_ratio_is_one(tiny_gpt2, tokenizer_dir, imdb_dir, monkeypatch, tmp_path):
    seen = []
    original = update_mod.ppo_loss

    def spy(logprobs, entropy, values, old_logprobs, *args):
        seen.append((logprobs - old_logprobs).detach())
        return original(logprobs, entropy, values, old_logprobs, *args)

    monkeypatch.setattr(update_mod, "ppo_loss", spy)
    module = make_ppo(tiny_gpt2, tokenizer_dir, ppo_epochs=2, num_mini_batches=2,
                      reward_fn="helpers:char_count")
    trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, make_dm(imdb_dir, tokenizer_dir))
    assert trainer.global_step == 4  # ppo_epochs x num_mini_batches optimizer steps per batch
    assert seen[0].abs().max().item() < 1e-6, "nothing has changed before the first step"
    assert seen[1].abs().max().item() > 1e-6, "the second mini-batch sees the updated policy"


def test_ppo_learns_a_rule_based_reward(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    L.seed_everything(0)
    module = make_ppo(tiny_gpt2, tokenizer_dir, learning_rate=3e-3, ppo_epochs=2, kl_coef=0.01,
                      adaptive_kl=False, temperature=1.0, sampling_seed=1)
    scores, kls = [], []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            scores.append(trainer.callback_metrics["reward/score"].item())
            kls.append(trainer.callback_metrics["objective/kl"].item())

    trainer = L.Trainer(max_steps=2 * 40, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(module, make_dm(imdb_dir, tokenizer_dir, batch_size=16))
    first, last = sum(scores[:5]) / 5, sum(scores[-5:]) / 5
    print(f"score {first:.3f} -> {last:.3f}; kl {kls[0]:.3f} -> {kls[-1]:.3f}")
    assert last > first + 0.2, (first, last)
    assert all(torch.isfinite(torch.tensor(kls)))


def test_bad_reward_configuration(tiny_gpt2, tokenizer_dir):
    with pytest.raises(ValueError, match="exactly one of reward_model"):
        make_ppo(tiny_gpt2, tokenizer_dir, reward_fn=None)
    with pytest.raises(ImportError, match="cannot import module"):
        make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="nowhere.at_all:fn")


def test_response_longer_than_context_is_rejected(tiny_gpt2, tokenizer_dir, imdb_dir):
    module = make_ppo(tiny_gpt2, tokenizer_dir, response_min_tokens=60, response_max_tokens=62)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"exceeds the policy's context of 64"):
        trainer.fit(module, make_dm(imdb_dir, tokenizer_dir))


def test_lora_policy_uses_itself_without_adapter_as_reference(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    pytest.importorskip("peft")
    from transformers import pipeline

    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count", lora_r=4,
                      gradient_checkpointing=True, export_dir=str(tmp_path / "export"))
    assert module.ref_model is None
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "value_head" in n for n in trainable)
    probe = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        base_logits = module.policy.lm(probe).logits  # the adapter starts as the identity
    kls = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            kls.append(trainer.callback_metrics["objective/kl"].item())

    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, callbacks=[Record()])
    trainer.fit(module, make_dm(imdb_dir, tokenizer_dir))
    assert kls[0] == pytest.approx(0.0, abs=1e-6), "LoRA starts as the identity: policy == reference"
    assert abs(kls[-1]) > 1e-6, "after updates the adapter moves the policy away from the reference"
    gen = pipeline("text-generation", model=str(tmp_path / "export"))
    assert gen("the movie", max_new_tokens=2)[0]["generated_text"].startswith("the movie")
    assert any("lora_" in n for n, _ in module.named_parameters()), "exporting merged a copy"
    with torch.no_grad():
        with module.policy.lm.disable_adapter():
            torch.testing.assert_close(module.policy.lm(probe).logits, base_logits, rtol=0, atol=1e-6)
        assert not torch.allclose(module.policy.lm(probe).logits, base_logits, atol=1e-6), "the adapter trained"


def test_fused_first_forward_gives_the_same_training(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    states, seen = {}, []
    original = engine.ppo_update

    def spy(policy, ro, *args, first=None, **kwargs):
        if first is not None:
            seen.append((first[0] - ro.logprobs).abs().max().item())
        return original(policy, ro, *args, first=first, **kwargs)

    engine.ppo_update = spy
    try:
        for fuse in (True, False):
            module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count", ppo_epochs=2,
                              fuse_first_forward=fuse)
            trainer = L.Trainer(max_steps=2 * 3, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                                enable_progress_bar=False, enable_model_summary=False)
            trainer.fit(module, make_dm(imdb_dir, tokenizer_dir))
            states[fuse] = module.state_dict()
    finally:
        engine.ppo_update = original
    assert seen == [0.0, 0.0, 0.0], "the reused forward gives a policy/old ratio of exactly 1"
    for name, value in states[True].items():
        torch.testing.assert_close(value, states[False][name], atol=2e-5, rtol=1e-4, msg=name)


def test_separate_critic_trains_its_own_trunk(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count", separate_critic=True)
    critic_before = {k: v.clone() for k, v in module.policy.critic.state_dict().items()}
    L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
              enable_progress_bar=False).fit(module, make_dm(imdb_dir, tokenizer_dir))
    moved = [k for k, v in module.policy.critic.state_dict().items() if not torch.equal(v, critic_before[k])]
    assert moved, "the critic's trunk is trained through the value loss"
    assert any(k.startswith("policy.critic.") for k in module.state_dict())


def test_missing_eos_penalty_and_stop_masking(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:zero_reward", stop_at_eos=True,
                      missing_eos_penalty=1.0, temperature=3.0, response_min_tokens=12, response_max_tokens=12)
    eos = module.tokenizer.eos_token_id
    with torch.no_grad():  # make EOS likely, so some responses stop and some do not
        module.policy.lm.lm_head.weight[eos] += 0.3 * module.policy.lm.lm_head.weight.abs().max()
    dm = make_dm(imdb_dir, tokenizer_dir, batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    ro, _ = module.rollout(batch["input_ids"], batch["attention_mask"], {})
    ended = (ro.responses == eos).any(-1)
    assert ended.any() and not ended.all()
    torch.testing.assert_close(ro.scores, -(~ended).float())
    for row, mask in zip(ro.responses, ro.response_mask, strict=True):
        n = int(mask.sum())
        assert (row[n:] == module.tokenizer.pad_token_id).all()
        if (row[:n] == eos).any():
            assert row[n - 1] == eos and (row[: n - 1] != eos).all()


def test_score_normalisation_is_fitted_once_and_checkpointed(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count", normalize_scores=True)
    dm = make_dm(imdb_dir, tokenizer_dir, batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    ro, _ = module.rollout(batch["input_ids"], batch["attention_mask"], {})
    assert bool(module.score_norm.fitted)
    assert abs(ro.scores.mean().item()) < 1e-5 and abs(ro.scores.std().item() - 1) < 1e-4
    shift = module.score_norm.shift.item()
    module.rollout(batch["input_ids"], batch["attention_mask"], {})
    assert module.score_norm.shift.item() == shift, "fitted on the initial policy only"
    assert "score_norm.shift" in module.state_dict() and "score_norm.scale" in module.state_dict()


def test_ppo_runs_under_bf16_mixed(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    module = make_ppo(tiny_gpt2, tokenizer_dir, reward_fn="helpers:char_count", ppo_epochs=2)
    rollout, autocast = module.rollout, []

    def recording(*args, **kwargs):
        autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return rollout(*args, **kwargs)

    module.rollout = recording
    trainer = L.Trainer(max_steps=2 * 2, precision="bf16-mixed", logger=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, enable_progress_bar=False)
    trainer.fit(module, make_dm(imdb_dir, tokenizer_dir))
    assert trainer.global_step == 4 and module.guard.skipped == 0
    assert autocast == [(True, torch.bfloat16)] * 2, "both rollouts ran under bf16 autocast"
    assert trainer.callback_metrics["rollout/logprob_diff_mean"].item() < module.hparams.logprob_tolerance
    assert all(p.dtype == torch.float32 for p in module.policy.parameters()), "master weights stay fp32"


def test_weight_decay_spares_biases_and_norms(tiny_gpt2, tokenizer_dir):
    module = make_ppo(tiny_gpt2, tokenizer_dir, weight_decay=0.1)
    module.trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    groups = module.configure_optimizers()["optimizer"].param_groups
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(module.policy.named_parameters())
    assert decay[id(named["lm.transformer.h.0.ln_1.weight"])] == 0.0
    assert decay[id(named["lm.transformer.h.0.attn.c_attn.bias"])] == 0.0
    assert decay[id(named["lm.transformer.h.0.attn.c_attn.weight"])] == 0.1
    assert len(decay) == sum(p.requires_grad for p in module.policy.parameters())


def test_kl_loss_coefficient_is_fixed_unless_asked(tiny_gpt2, tokenizer_dir):
    from lightning_rlhf.rl.kl import AdaptiveKLController

    loss = dict(advantage_estimator="grpo", samples_per_prompt=2, kl_in_reward=False, kl_loss_coef=0.1)
    assert not isinstance(make_ppo(tiny_gpt2, tokenizer_dir, **loss).kl_ctl, AdaptiveKLController)
    assert isinstance(make_ppo(tiny_gpt2, tokenizer_dir, adaptive_kl=True, **loss).kl_ctl, AdaptiveKLController)
    assert isinstance(make_ppo(tiny_gpt2, tokenizer_dir).kl_ctl, AdaptiveKLController), "the reward's KL adapts"
    assert not isinstance(make_ppo(tiny_gpt2, tokenizer_dir, adaptive_kl=False).kl_ctl, AdaptiveKLController)


def test_dr_grpo_gets_its_constant_divisor(tiny_gpt2, tokenizer_dir, caplog):
    dr = dict(advantage_estimator="dr_grpo", samples_per_prompt=2)
    assert make_ppo(tiny_gpt2, tokenizer_dir, **dr).hparams.loss_aggregation == "seq_mean_token_sum_norm"
    assert make_ppo(tiny_gpt2, tokenizer_dir).hparams.loss_aggregation == "token_mean"
    with caplog.at_level("INFO"):
        kept = make_ppo(tiny_gpt2, tokenizer_dir, loss_aggregation="token_mean", **dr)
    assert kept.hparams.loss_aggregation == "token_mean"
    assert "dr_grpo with loss_aggregation token_mean (its own is seq_mean_token_sum_norm)" in caplog.text
