"""GRPO's loss variants, rollout correction and dynamic sampling wired through the engine: the
options reach the loss, the correction weights scale the update, zero-std groups are replaced."""

import math
from dataclasses import replace

import lightning as L
import pytest
import torch
from helpers import engine_setup, make_dm, make_ppo

import lightning_rlhf.engine.update as update_mod
from lightning_rlhf.engine import AdvantageConfig, Optimization, collect_rollout, ppo_update
from lightning_rlhf.engine.dynamic import Drawn, dynamic_draw, pad_cat
from lightning_rlhf.guard import NonFiniteGuard
from lightning_rlhf.rl.experience import build_rollout


def critic_free(tiny_gpt2, tokenizer_dir, **update):
    """The engine set-up with RLOO, 2 samples per prompt (no value loss), one epoch."""
    models, cfg, queries, query_mask = engine_setup(tiny_gpt2, tokenizer_dir, value_head=False, ppo_epochs=1, **update)
    cfg = replace(cfg, sampling=replace(cfg.sampling, samples_per_prompt=2),
                  advantages=AdvantageConfig(advantage_estimator="rloo"))
    return models, cfg, queries, query_mask


def one_update(models, cfg, ro) -> list[torch.Tensor]:
    """The gradient of one update (one mini-batch) on the rollout; the step is taken with lr 0."""
    opt = torch.optim.SGD(models.policy.parameters(), lr=0.0)
    ppo_update(models.policy, ro, cfg, Optimization(opt), torch.Generator().manual_seed(1), NonFiniteGuard(), 0)
    return [p.grad.clone() for p in models.policy.parameters()]


def test_token_tis_weights_scale_the_policy_update(tiny_gpt2, tokenizer_dir):
    """A sampler whose every token log-prob is log 2 lower gives ratio 2 (< cap 3) at every
    token: the policy-only (RLOO) gradient doubles."""
    models, cfg, queries, query_mask = critic_free(tiny_gpt2, tokenizer_dir, fuse_first_forward=False)
    ro, _ = collect_rollout(models, cfg, queries, query_mask, 0.0, torch.Generator().manual_seed(0), {})
    plain = one_update(models, cfg, ro)
    corrected_cfg = replace(cfg, update=replace(cfg.update, rollout_correction="token_tis"))
    drifted = ro._replace(sampler_logprobs=(ro.logprobs - math.log(2)) * ro.response_mask)
    corrected = one_update(models, corrected_cfg, drifted)
    assert sum(d.abs().sum() for d in plain) > 0
    for p, c in zip(plain, corrected, strict=True):
        torch.testing.assert_close(c, 2 * p, rtol=1e-5, atol=1e-8)


def test_sequence_mask_drops_responses_whose_ratio_exceeds_the_cap(tiny_gpt2, tokenizer_dir):
    models, cfg, queries, query_mask = critic_free(tiny_gpt2, tokenizer_dir, rollout_correction="sequence_mask")
    ro, first = collect_rollout(models, cfg, queries, query_mask, 0.0, torch.Generator().manual_seed(0), {})
    assert ro.sampler_logprobs is not None and torch.equal(ro.sampler_logprobs, ro.sampler_logprobs * ro.response_mask)
    drifted = ro._replace(sampler_logprobs=(ro.logprobs - math.log(2)) * ro.response_mask)  # 5 tokens: ratio 32
    opt = torch.optim.SGD(models.policy.parameters(), lr=0.5)
    before = [p.detach().clone() for p in models.policy.parameters()]
    result = ppo_update(models.policy, drifted, cfg, Optimization(opt), torch.Generator(), NonFiniteGuard(), 0,
                        first=first)
    assert result.stats["rollout_correction/frac_masked"].item() == 1.0
    assert result.stats["rollout_correction/ratio_mean"].item() == pytest.approx(32.0, rel=1e-4)
    assert all(torch.equal(b, p) for b, p in zip(before, models.policy.parameters(), strict=True)), \
        "every response masked: no policy gradient"


def test_the_update_passes_clip_higher_and_the_sequence_level_to_the_loss(tiny_gpt2, tokenizer_dir, monkeypatch):
    models, cfg, queries, query_mask = critic_free(tiny_gpt2, tokenizer_dir, cliprange_high=0.28,
                                                   importance_sampling_level="sequence")
    seen = []
    real = update_mod.ppo_loss

    def spy(*args, **kwargs):
        seen.append(args[15:17])
        return real(*args, **kwargs)

    monkeypatch.setattr(update_mod, "ppo_loss", spy)
    ro, first = collect_rollout(models, cfg, queries, query_mask, 0.0, torch.Generator().manual_seed(0), {})
    opt = torch.optim.SGD(models.policy.parameters(), lr=0.1)
    ppo_update(models.policy, ro, cfg, Optimization(opt), torch.Generator(), NonFiniteGuard(), 0, first=first)
    assert seen == [(0.28, "sequence")]


def test_scale_rewards_reaches_grpo_advantages():
    """Scores (1, 3 | 0, 2), k = 2, no KL: centred -+1 in each group. group: both stds sqrt(2);
    none: -+1; batch: the std of all four (mean 1.5, squares 0.25 + 2.25 + 2.25 + 0.25 = 5, over 3)."""
    scores = torch.tensor([1.0, 3.0, 0.0, 2.0])
    zeros = torch.zeros(4, 2)

    def advantages(scale):
        ro = build_rollout(torch.zeros(4, 1, dtype=torch.long), torch.ones(4, 1), torch.zeros(4, 2, dtype=torch.long),
                           torch.ones(4, 2), zeros, zeros, None, scores, 0.0, estimator="grpo", samples_per_prompt=2,
                           scale_rewards=scale)
        return ro.advantages[:, 0]

    centred = torch.tensor([-1.0, 1.0, -1.0, 1.0])
    torch.testing.assert_close(advantages("group"), centred / (math.sqrt(2) + 1e-4))
    torch.testing.assert_close(advantages("none"), centred)
    torch.testing.assert_close(advantages("batch"), centred / (math.sqrt(5 / 3) + 1e-4))


def fake_draw(scores_by_prompt: dict[int, list[float]]):
    """A ``draw`` whose prompt p (a 1-token prompt of id p) gets the next scores listed for p."""
    calls = []

    def draw(prompts, prompt_mask):
        calls.append(prompts[:, -1].tolist())
        ids = prompts[:, -1]
        scores = torch.tensor([v for p in ids.tolist() for v in scores_by_prompt[p].pop(0)])
        n = len(scores)
        return Drawn(prompts, prompt_mask, ids.repeat_interleave(2).unsqueeze(-1).expand(n, 3), torch.ones(n, 3),
                     torch.zeros(n, 3), scores, None)
    return draw, calls


def test_dynamic_draw_refills_zero_std_groups_by_hand():
    """Prompts 1-4; 2 and 4 score equal twice; the refill gives prompts 7, 8 then 9: 7 keeps, 8
    does not, 9 does. Kept in draw order: 1, 3, 7, 9; 3 zero-std groups dropped (2, 4, 8), 3 refilled."""
    draw, calls = fake_draw({1: [[0, 1]], 2: [[1, 1]], 3: [[2, 0]], 4: [[0, 0]], 7: [[1, 2]], 8: [[5, 5]],
                             9: [[0, 3]]})
    queue = [[7, 8], [9]]

    def refill(n):
        ids = torch.tensor(queue.pop(0)).unsqueeze(-1)
        assert len(ids) == n
        return ids, torch.ones_like(ids)

    prompts = torch.tensor([[1], [2], [3], [4]])
    out, counts = dynamic_draw(draw, prompts, torch.ones_like(prompts), 2, tries=3, pad_token_id=0, refill=refill)
    assert calls == [[1, 2, 3, 4], [7, 8], [9]]
    assert out.prompts[:, -1].tolist() == [1, 3, 7, 9]
    assert out.scores.tolist() == [0, 1, 2, 0, 1, 2, 0, 3]
    assert counts == {"dynamic_sampling/zero_std_groups": 3.0, "dynamic_sampling/refill_prompts": 3.0,
                      "dynamic_sampling/zero_std_kept": 0.0}


def test_dynamic_draw_keeps_zero_std_groups_when_the_tries_run_out():
    """Without a refill source the dropped prompts are re-drawn; prompt 2 never varies, so after
    2 tries the batch is completed with one of its zero-std groups."""
    draw, calls = fake_draw({1: [[0, 1]], 2: [[1, 1], [2, 2], [3, 3]]})
    prompts = torch.tensor([[1], [2]])
    out, counts = dynamic_draw(draw, prompts, torch.ones_like(prompts), 2, tries=2, pad_token_id=0)
    assert calls == [[1, 2], [2], [2]]
    assert out.prompts[:, -1].tolist() == [1, 2] and out.scores.tolist() == [0, 1, 1, 1]
    assert counts["dynamic_sampling/zero_std_groups"] == 3 and counts["dynamic_sampling/zero_std_kept"] == 1


def test_pad_cat_pads_prompts_left_and_responses_right():
    a, b = torch.tensor([[1, 2]]), torch.tensor([[3]])
    assert pad_cat([a, b], 0, left=True).tolist() == [[1, 2], [0, 3]]
    assert pad_cat([a, b], 9, left=False).tolist() == [[1, 2], [3, 9]]


def test_dynamic_sampling_in_training_refills_from_the_train_split(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path):
    """A reward that is 1 when the response has an 'e' leaves some groups zero-std: the logged
    counts say how many were dropped and refilled (at most 2 tries of 4), and every batch keeps
    its 4 prompts x 2 samples."""
    module = make_ppo(tiny_gpt2, tokenizer_dir, advantage_estimator="grpo", samples_per_prompt=2,
                      reward_fn="helpers:has_e", dynamic_sampling=True, dynamic_sampling_tries=2)
    shapes, rollout = [], module.rollout

    def recorded(*args):
        out = rollout(*args)
        shapes.append((out[0].responses.shape[0], out[0].queries.shape[0]))
        return out

    module.rollout = recorded
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, make_dm(imdb_dir, tokenizer_dir, batch_size=4))
    metrics = trainer.callback_metrics
    zero, refill, kept = (metrics[f"dynamic_sampling/{k}"].item() for k in ("zero_std_groups", "refill_prompts",
                                                                              "zero_std_kept"))
    assert refill > 0, "some groups were zero-std and replaced"
    assert zero == refill + kept <= 4 * 3, "each dropped group is refilled or, after the last try, kept"
    assert set(shapes) == {(8, 8)}


def test_refused_variant_settings(tiny_gpt2, tokenizer_dir):
    cases = [
        (dict(loss_type="dapo", loss_aggregation="seq_mean_token_mean"), "loss_type dapo is loss_aggregation"),
        (dict(loss_type="ppo"), "loss_type must be one of"),
        (dict(advantage_estimator="rloo", samples_per_prompt=2, scale_rewards="batch"), "remove scale_rewards"),
        (dict(rollout_correction="token_tis", rollout_correction_cap=1.0), "cap must be > 1"),
        (dict(rollout_correction="tis"), "rollout_correction must be one of"),
        (dict(dynamic_sampling=True), "has no group baseline"),
        (dict(advantage_estimator="grpo", samples_per_prompt=1, dynamic_sampling=True), "samples_per_prompt to 2"),
        (dict(cliprange_high=-0.1), "cliprange_high must be >= 0"),
        (dict(importance_sampling_level="seq"), "importance_sampling_level must be token or sequence"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            make_ppo(tiny_gpt2, tokenizer_dir, **kw)
    assert make_ppo(tiny_gpt2, tokenizer_dir, loss_type="dr_grpo").hparams.loss_aggregation == \
        "seq_mean_token_sum_norm"
