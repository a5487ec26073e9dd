"""Critic-free estimators against hand-computed values: 2 prompts x k samples, groups in
consecutive rows; zero-variance groups; k = 1 where allowed and an error where not."""

import math

import pytest
import torch

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.estimators import (
    check_estimator,
    group_mean_baseline,
    group_statistics,
    grpo_advantages,
    reinforce_pp_advantages,
    remax_advantages,
    returns_to_go,
    rloo_advantages,
)
from lightning_rlhf.rl.experience import build_rollout
from lightning_rlhf.rl.losses import kl_penalty_loss, ppo_loss

# prompt 0: scores 1, 2, 6; prompt 1: all 0 (a zero-variance group)
SCORES = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 0.0])


def test_rloo_leaves_one_out():
    # 1 - (2+6)/2, 2 - (1+6)/2, 6 - (1+2)/2; the zero group gets 0
    expected = torch.tensor([-3.0, -1.5, 4.5, 0.0, 0.0, 0.0])
    torch.testing.assert_close(rloo_advantages(SCORES, 3), expected)
    torch.testing.assert_close(rloo_advantages(torch.tensor([1.0, 3.0, 5.0, 5.0]), 2),
                               torch.tensor([-2.0, 2.0, 0.0, 0.0]))


def test_grpo_and_dr_grpo():
    std = math.sqrt((4 + 1 + 9) / 2)  # deviations -2, -1, 3 from the mean 3; unbiased
    grpo = grpo_advantages(SCORES, 3)
    torch.testing.assert_close(grpo[:3], torch.tensor([-2.0, -1.0, 3.0]) / (std + 1e-4))
    assert torch.equal(grpo[3:], torch.zeros(3)), "a zero-variance group gets advantage 0, not NaN"
    torch.testing.assert_close(grpo_advantages(SCORES, 3, scale_by_std=False),
                               torch.tensor([-2.0, -1.0, 3.0, 0.0, 0.0, 0.0]))


def test_group_estimators_refuse_one_sample_per_prompt():
    for estimator in ("rloo", "grpo", "dr_grpo", "reinforce_pp_baseline"):
        with pytest.raises(ConfigError, match="set samples_per_prompt to 2 or more"):
            check_estimator(estimator, 1)
    for estimator in ("gae", "reinforce_pp", "remax"):
        check_estimator(estimator, 1)
    with pytest.raises(ConfigError, match="must be one of"):
        check_estimator("ppo2", 2)
    with pytest.raises(ConfigError):
        rloo_advantages(SCORES, 1)
    with pytest.raises(ValueError, match="groups of 4"):
        rloo_advantages(SCORES, 4)


def test_group_statistics():
    std, frac_zero = group_statistics(SCORES, 3)
    assert std.item() == pytest.approx((math.sqrt(7) + 0) / 2)
    assert frac_zero.item() == 0.5
    torch.testing.assert_close(group_mean_baseline(SCORES, 3), torch.tensor([3.0, 3, 3, 0, 0, 0]))


# two responses of 3 and 2 tokens; per-token rewards -beta*KL with the score on the last token
MASK = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
REWARDS = torch.tensor([[-0.1, -0.2, 0.9], [0.2, 0.2, 0.0]])


def test_returns_to_go():
    torch.testing.assert_close(returns_to_go(REWARDS, MASK), torch.tensor([[0.6, 0.7, 0.9], [0.4, 0.2, 0.0]]))
    torch.testing.assert_close(returns_to_go(REWARDS, MASK, gamma=0.5),
                               torch.tensor([[-0.1 - 0.1 + 0.225, -0.2 + 0.45, 0.9], [0.3, 0.2, 0.0]]))


def test_reinforce_pp_whitens_the_returns_over_the_batch():
    # returns 0.6 0.7 0.9 | 0.4 0.2: mean 0.56, unbiased var 0.292 / 4 = 0.073
    expected = torch.tensor([[0.04, 0.14, 0.34], [-0.16, -0.36, 0.0]]) / math.sqrt(0.073 + 1e-8)
    torch.testing.assert_close(reinforce_pp_advantages(REWARDS, MASK), expected)


# two groups of k = 2 with different means (0.5 and 2.5), two tokens each, the score on the last
GROUP_REWARDS = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 3.0], [0.0, 2.0]])
GROUP_MASK = torch.ones(4, 2)


def test_reinforce_pp_baseline_subtracts_the_group_mean_first():
    baseline = group_mean_baseline(torch.tensor([1.0, 0.0, 3.0, 2.0]), 2)
    torch.testing.assert_close(baseline, torch.tensor([0.5, 0.5, 2.5, 2.5]))
    # returns minus the baseline: +-0.5 on every token; mean 0, unbiased variance 8 * 0.25 / 7
    expected = torch.tensor([[0.5, 0.5], [-0.5, -0.5], [0.5, 0.5], [-0.5, -0.5]]) / math.sqrt(2 / 7 + 1e-8)
    torch.testing.assert_close(reinforce_pp_advantages(GROUP_REWARDS, GROUP_MASK, baseline), expected)
    assert not torch.allclose(reinforce_pp_advantages(GROUP_REWARDS, GROUP_MASK), expected), \
        "without the baseline the group means stay in the advantages"


def test_reinforce_pp_baseline_is_discounted_with_the_score():
    baseline = torch.tensor([0.5, 0.5, 2.5, 2.5])
    # score minus baseline on the last token (+-0.5), then returns with gamma 0.5: [+-0.25, +-0.5];
    # mean 0, unbiased variance (4 * 0.0625 + 4 * 0.25) / 7
    expected = torch.tensor([[0.25, 0.5], [-0.25, -0.5], [0.25, 0.5], [-0.25, -0.5]]) / math.sqrt(1.25 / 7 + 1e-8)
    torch.testing.assert_close(reinforce_pp_advantages(GROUP_REWARDS, GROUP_MASK, baseline, gamma=0.5), expected)


def test_remax_subtracts_the_greedy_score():
    out = remax_advantages(REWARDS, MASK, torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(out, torch.tensor([[0.1, 0.2, 0.4], [-0.6, -0.8, 0.0]]))


def _rollout(estimator, k, kl_coef, scores, greedy=None):
    n, r = scores.shape[0], 3
    mask = torch.ones(n, r)
    logprobs = torch.full((n, r), -1.0)
    ref = logprobs - torch.arange(n, dtype=torch.float).unsqueeze(-1) * 0.1  # KL 0.1 * row per token
    return build_rollout(torch.zeros(n, 2, dtype=torch.long), torch.ones(n, 2), torch.zeros(n, r, dtype=torch.long),
                         mask, logprobs, ref, None, scores, kl_coef, estimator=estimator, samples_per_prompt=k,
                         greedy_scores=greedy)


def test_sequence_estimators_fold_the_kl_into_the_score():
    scores = torch.tensor([1.0, 2.0, 0.5, 0.5])
    ro = _rollout("rloo", 2, kl_coef=0.5, scores=scores)
    # summed KL per row: 0, 0.3, 0.6, 0.9 -> adjusted 1.0, 1.85, 0.2, 0.05
    expected = torch.tensor([-0.85, 0.85, 0.15, -0.15]).unsqueeze(-1).expand(-1, 3)
    torch.testing.assert_close(ro.advantages, expected)
    assert ro.values is None and torch.equal(ro.returns, ro.advantages)
    assert torch.equal(_rollout("rloo", 2, kl_coef=0.0, scores=scores).advantages[:, 0],
                       torch.tensor([-1.0, 1.0, 0.0, 0.0]))


def test_grpo_subtracts_the_kl_after_the_group_normalisation():
    scores = torch.tensor([1.0, 2.0, 0.5, 0.5])
    ro = _rollout("grpo", 2, kl_coef=0.5, scores=scores)
    # group 1: (-0.5, 0.5) / (std sqrt(0.5) + 1e-4), minus 0.5 * (KL - its group mean): KL 0, 0.3 -> -0.15, 0.15;
    # group 2 has equal scores: 0 minus 0.5 * (0.6, 0.9 - 0.75), not KL differences blown up to unit variance
    z = 0.5 / (math.sqrt(0.5) + 1e-4)
    expected = torch.tensor([-z + 0.075, z - 0.075, 0.075, -0.075]).unsqueeze(-1).expand(-1, 3)
    torch.testing.assert_close(ro.advantages, expected)
    dr = _rollout("dr_grpo", 2, kl_coef=0.5, scores=scores).advantages[:, 0]
    # Dr. GRPO centres the KL-adjusted scores 1.0, 1.85 | 0.2, 0.05 (linear: the same as centring each)
    torch.testing.assert_close(dr, torch.tensor([-0.425, 0.425, 0.075, -0.075]))


def test_token_estimators_take_the_kl_per_token():
    ro = _rollout("remax", 1, kl_coef=1.0, scores=torch.tensor([1.0, 1.0]), greedy=torch.tensor([0.0, 0.5]))
    # row 1: per-token KL 0.1, rewards -0.1 -0.1 0.9 -> returns 0.7 0.8 0.9, minus 0.5
    torch.testing.assert_close(ro.advantages[1], torch.tensor([0.2, 0.3, 0.4]))
    torch.testing.assert_close(ro.advantages[0], torch.tensor([1.0, 1.0, 1.0]))


def test_kl_loss_gradient_matches_a_finite_difference():
    torch.manual_seed(0)
    logprobs = (torch.randn(2, 4, dtype=torch.float64) - 2).requires_grad_()
    ref = torch.randn(2, 4, dtype=torch.float64) - 2
    weights = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.float64) / 7
    loss = kl_penalty_loss(logprobs, ref, weights)
    (grad,) = torch.autograd.grad(loss, logprobs)
    eps, numeric = 1e-6, torch.zeros_like(grad)
    for i in range(2):
        for j in range(4):
            bump = torch.zeros_like(ref)
            bump[i, j] = eps
            numeric[i, j] = (kl_penalty_loss(logprobs.detach() + bump, ref, weights)
                             - kl_penalty_loss(logprobs.detach() - bump, ref, weights)) / (2 * eps)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad, (1 - torch.exp(ref - logprobs.detach())) * weights)
    assert kl_penalty_loss(ref.clone(), ref, weights).item() == 0.0


def test_critic_free_loss_has_no_value_term_and_adds_the_kl_term():
    logprobs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old, ref, adv, mask = logprobs.detach(), torch.tensor([[-1.5, -2.0]]), torch.tensor([[1.0, 1.0]]), torch.ones(1, 2)
    plain = ppo_loss(logprobs, torch.zeros(1, 2), None, old, None, adv, adv, mask, 0.2, 0.2, 0.1, 0.0)
    assert plain.value is None and plain.loss.item() == pytest.approx(-1.0) and plain.kl.item() == 0.0
    with_kl = ppo_loss(logprobs, torch.zeros(1, 2), None, old, None, adv, adv, mask, 0.2, 0.2, 0.1, 0.0,
                       ref_logprobs=ref, kl_loss_coef=0.5)
    k3 = (math.exp(-0.5) + 0.5 - 1) / 2  # token 0 only; token 1 equals the reference
    assert with_kl.kl.item() == pytest.approx(k3)
    assert with_kl.loss.item() == pytest.approx(-1.0 + 0.5 * k3)
