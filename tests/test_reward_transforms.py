"""Best-of-N reward transforms (vBoN's quantile reward, J-BOND's), the EMA anchor and the forward term."""

import math

import pytest
import torch
from helpers import make_dm, make_ppo

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.anchor import ema_update_
from lightning_rlhf.rl.losses import imitation_loss
from lightning_rlhf.rl.reward_transforms import (
    JBOND_PENALTY,
    best_of_first,
    bon_kl_coef,
    check_reward_transform,
    empirical_cdf,
    jbond_reward,
    quantile_reward,
    transform_scores,
)


def test_empirical_cdf_counts_the_sample_itself_and_half_the_ties():
    ref = torch.tensor([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]])
    # prompt 0 has k = 2 samples (rows 0, 1), prompt 1 has rows 2, 3
    scores = torch.tensor([1.5, -1.0, 5.0, 9.0])
    # (1 + below + ties / 2) / (m + 1), m = 3: 1.5 -> (1 + 2) / 4; -1 -> 1 / 4; 5 among three 5s -> (1 + 1.5) / 4
    expected = torch.tensor([3 / 4, 1 / 4, 2.5 / 4, 4 / 4])
    torch.testing.assert_close(empirical_cdf(scores, ref), expected)
    torch.testing.assert_close(quantile_reward(scores, ref), expected.log())
    assert quantile_reward(torch.tensor([1.0, 1.0]), torch.tensor([[1.0, 1.0]])).unique().numel() == 1


def test_jbond_penalises_only_a_sample_below_both_anchor_samples():
    anchor = torch.tensor([[1.0, 3.0]])
    scores = torch.tensor([0.5, 1.0, 2.0, 4.0])  # one prompt, k = 4
    torch.testing.assert_close(jbond_reward(scores, anchor), torch.tensor([-math.log(16), 0.0, 0.0, 0.0]))
    assert JBOND_PENALTY == pytest.approx(2.7725887)
    with pytest.raises(ValueError):
        jbond_reward(scores, torch.zeros(1, 3))


def test_transform_scores_needs_reference_scores():
    scores = torch.tensor([1.0, 2.0])
    assert transform_scores("none", scores, None) is scores
    with pytest.raises(ConfigError, match="reference_samples_per_prompt"):
        transform_scores("quantile", scores, None)


def test_best_of_first_n_and_the_bon_kl_coefficient():
    ref = torch.tensor([[0.1, 0.9, 5.0], [2.0, 2.0, 0.0]])
    assert best_of_first(ref, 2).tolist() == [1, 0]  # prompt 0's 5.0 is the third, outside n = 2; ties: first
    assert best_of_first(ref, 3).tolist() == [2, 0]
    assert bon_kl_coef(8) == pytest.approx(1 / 7) and bon_kl_coef(2) == 1.0


def test_ema_anchor_moves_eta_of_the_way():
    anchor, policy = [torch.tensor([0.0, 10.0])], [torch.tensor([1.0, 0.0])]
    ema_update_(anchor, policy, 0.25)
    torch.testing.assert_close(anchor[0], torch.tensor([0.25, 7.5]))


def test_imitation_loss_is_the_weighted_nll():
    logprobs = torch.tensor([[-1.0, -2.0], [-3.0, 0.0]])
    weights = torch.tensor([[1 / 3, 1 / 3], [1 / 3, 0.0]])  # token mean over 3 demo tokens
    assert imitation_loss(logprobs, weights).item() == pytest.approx(2.0)


BAD = [
    (dict(reward_transform="quantile"), "set bon_n"),
    (dict(reward_transform="quantile", bon_n=8), "reference_samples_per_prompt >= 1"),
    (dict(reward_transform="quantile", bon_n=8, reference_samples_per_prompt=16, kl_coef=0.2), "kl_coef: 0.142857"),
    (dict(reward_transform="quantile", bon_n=8, reference_samples_per_prompt=4, jeffreys_beta=0.5), ">= 8"),
    (dict(reward_transform="quantile", bon_n=8, reference_samples_per_prompt=16, kl_estimator="k3"), "k1"),
    (dict(reward_transform="quantile", bon_n=8, reference_samples_per_prompt=16, adaptive_kl=True),
     "adaptive_kl: false"),
    (dict(reward_transform="jbond", reference_samples_per_prompt=2), "anchor_ema"),
    (dict(reward_transform="jbond", anchor_ema=0.1, reference_samples_per_prompt=4), "reference_samples_per_prompt: 2"),
    (dict(reward_transform="jbond", anchor_ema=0.1, reference_samples_per_prompt=2, bon_n=4), "bon_n: 2"),
    (dict(anchor_ema=0.1), "set reward_transform"),
    (dict(reward_transform="bon_exact"), "must be one of"),
]


@pytest.mark.parametrize("kw, message", BAD)
def test_settings_that_miss_best_of_n_are_refused(tiny_gpt2, tokenizer_dir, kw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_ppo(tiny_gpt2, tokenizer_dir, advantage_estimator="rloo", samples_per_prompt=2, **kw)


def test_check_accepts_the_method_settings():
    check_reward_transform("quantile", 8, 16, 1 / 7, 0.0, 1.0, "k1")
    check_reward_transform("jbond", None, 2, 1.0, 0.02, 0.5, "k1")


def _fit(module, imdb_dir, tokenizer_dir, steps, tmp_path):
    import lightning as L
    L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(module, make_dm(imdb_dir, tokenizer_dir, 4))


def test_quantile_rollout_scores_are_log_cdfs_against_fresh_reference_samples(tiny_gpt2, tokenizer_dir, imdb_dir,
                                                                            tmp_path):
    module = make_ppo(tiny_gpt2, tokenizer_dir, advantage_estimator="rloo", samples_per_prompt=2,
                      reward_fn="helpers:char_count", reward_transform="quantile", bon_n=4,
                      reference_samples_per_prompt=5)
    assert module.kl_ctl.value == pytest.approx(1 / 3) and not module.hparams.adaptive_kl
    seen = []
    rollout = module.rollout

    def capture(*args, **kwargs):
        out = rollout(*args, **kwargs)
        seen.append((out[0], args[2]))
        return out

    module.rollout = capture
    _fit(module, imdb_dir, tokenizer_dir, 2, tmp_path)
    for ro, timings in seen:
        grid = torch.log(torch.arange(1, 13) / 12)  # (1 + below + ties / 2) / 6: halves of 1/6, 1/12 steps
        assert torch.isclose(ro.scores.unsqueeze(-1), grid).any(-1).all(), ro.scores
        assert (ro.scores <= 0).all() and ro.scores.min() >= math.log(1 / 6) - 1e-6
        assert timings["time/reference"] > 0 and "reward/raw_score" in timings
        assert ro.demos is None


def test_jbond_keeps_an_anchor_that_trails_the_policy_and_imitates_its_best(tiny_gpt2, tokenizer_dir, imdb_dir,
                                                                          tmp_path):
    module = make_ppo(tiny_gpt2, tokenizer_dir, advantage_estimator="rloo", samples_per_prompt=2,
                      reward_fn="helpers:char_count", reward_transform="jbond", anchor_ema=0.5,
                      reference_samples_per_prompt=2, jeffreys_beta=0.5)
    assert module.kl_ctl.value == 1.0
    start = [p.detach().clone() for p in module.policy.lm.parameters()]
    seen = []
    rollout = module.rollout
    module.rollout = lambda *a, **kw: seen.append(rollout(*a, **kw)) or seen[-1]
    _fit(module, imdb_dir, tokenizer_dir, 1, tmp_path)
    ro = seen[0][0]
    assert set(ro.scores.unique().tolist()) <= {0.0, -JBOND_PENALTY}
    assert ro.demos is not None and ro.demos.shape[0] == ro.responses.shape[0]
    assert torch.equal(ro.demos[0::2], ro.demos[1::2]), "a prompt's k rows share its best anchor sample"
    for a, p, s in zip(module.anchor.parameters(), module.policy.lm.parameters(), start, strict=True):
        torch.testing.assert_close(a, 0.5 * s + 0.5 * p)  # one iteration with eta 0.5
    assert not any(p.requires_grad for p in module.anchor.parameters())
    assert any("anchor." in k for k in module.state_dict()), "the anchor is in checkpoints"


@pytest.mark.parametrize("config", ["offline/vbon.yaml", "offline/bond.yaml", "gpt2/vbon.yaml", "gpt2/bond.yaml"])
def test_shipped_best_of_n_configs_pass_the_settings_check(config):
    """Parsing a config does not build its module; the Best-of-N settings are checked here."""
    from pathlib import Path

    from lightning_rlhf.pipeline import load_stage

    init = load_stage(Path(__file__).resolve().parents[1] / "configs" / config)["model"]["init_args"]  # with its base
    check_reward_transform(init["reward_transform"], init.get("bon_n"), init["reference_samples_per_prompt"],
                           init["kl_coef"], init.get("anchor_ema", 0.0), init.get("jeffreys_beta", 1.0),
                           init.get("kl_estimator", "k1"))
    assert init.get("adaptive_kl") in (None, False)
