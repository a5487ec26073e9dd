"""GRPO's loss variants against hand-computed values: clip-higher, GSPO's sequence ratio, rollout
weights in the policy loss, ``scale_rewards`` and the zero-variance groups of dynamic sampling."""

import math

import pytest
import torch

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.estimators import group_statistics, nonzero_std_groups, scaled_group_advantages
from lightning_rlhf.rl.losses import check_policy_loss_options, ppo_loss, ppo_policy_loss, sequence_log_ratio

# three tokens of one response with ratios 1.5, 0.5, 1.25 (old log-probs 0) and advantages +1, -1, +1
RATIOS = torch.tensor([[1.5, 0.5, 1.25]])
ADV = torch.tensor([[1.0, -1.0, 1.0]])
ONES = torch.ones(1, 3)


def test_clip_higher_by_hand():
    logprobs = RATIOS.log().requires_grad_()
    out = ppo_policy_loss(logprobs, torch.zeros(1, 3), ADV, ONES, cliprange=0.2, cliprange_high=0.28)
    # token 1: max(-1.5, -clip(1.5, 0.8, 1.28)) = -1.28 (clipped, high); token 2: max(0.5, 0.8) = 0.8
    # (clipped, low); token 3: 1.25 < 1.28, max(-1.25, -1.25) = -1.25 (not clipped)
    assert out.loss.item() == pytest.approx((-1.28 + 0.8 - 1.25) / 3)
    assert (out.clip_frac.item(), out.clip_frac_low.item(), out.clip_frac_high.item()) == pytest.approx((2 / 3, 1 / 3,
                                                                                                          1 / 3))
    out.loss.backward()
    # only the unclipped token 3 has a gradient: d(-A r / 3)/d log r = -1.25 / 3
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, 0.0, -1.25 / 3]]))


def test_symmetric_clip_is_the_default():
    symmetric = ppo_policy_loss(RATIOS.log(), torch.zeros(1, 3), ADV, ONES, cliprange=0.2)
    # token 3 is clipped at 1.2 now: (-1.2 + 0.8 - 1.2) / 3; clipped: token 1 and 3 high, token 2 low
    assert symmetric.loss.item() == pytest.approx(-1.6 / 3)
    assert (symmetric.clip_frac.item(), symmetric.clip_frac_low.item(), symmetric.clip_frac_high.item()) == \
        pytest.approx((1.0, 1 / 3, 2 / 3))
    explicit = ppo_policy_loss(RATIOS.log(), torch.zeros(1, 3), ADV, ONES, cliprange=0.2, cliprange_high=0.2)
    assert explicit.loss.item() == symmetric.loss.item()


# GSPO: two responses of 2 and 1 tokens; token log-ratios 0.2, -0.4 | 0.3 (the padding's 9.0 must not count)
GSPO_LOGP = torch.tensor([[0.2, -0.4, 9.0], [0.3, 9.0, 9.0]])
GSPO_MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])
S1, S2 = math.exp(-0.1), math.exp(0.3)  # exp of the mean log-ratio: (0.2 - 0.4) / 2 = -0.1, and 0.3


def test_sequence_log_ratio_is_the_mean_log_ratio_at_every_token():
    torch.testing.assert_close(sequence_log_ratio(GSPO_LOGP, torch.zeros(2, 3), GSPO_MASK),
                               torch.tensor([[-0.1, -0.1, 0.0], [0.3, 0.0, 0.0]]))


def test_gspo_loss_and_gradient_by_hand():
    adv = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    logprobs = GSPO_LOGP.clone().requires_grad_()
    out = ppo_policy_loss(logprobs, torch.zeros(2, 3), adv, GSPO_MASK, cliprange=0.5,
                          importance_sampling_level="sequence")
    # no clipping (0.905 and 1.350 lie in [0.5, 1.5]); token mean over 3 tokens of -A s_i
    assert out.loss.item() == pytest.approx((-2 * S1 + S2) / 3)
    assert out.ratio_mean.item() == pytest.approx((2 * S1 + S2) / 3) and out.ratio_max.item() == pytest.approx(S2)
    assert out.approx_kl.item() == pytest.approx(0.5 * (0.04 + 0.16 + 0.09) / 3), "per-token log-ratios"
    out.loss.backward()
    # d(-A s_i)/d log π_t = -A s_i (GSPO-token); weights 1/3
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-S1 / 3, -S1 / 3, 0.0], [S2 / 3, 0.0, 0.0]]))


def test_gspo_clips_the_sequence_ratio():
    adv = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    logprobs = GSPO_LOGP.clone().requires_grad_()
    out = ppo_policy_loss(logprobs, torch.zeros(2, 3), adv, GSPO_MASK, cliprange=0.2,
                          importance_sampling_level="sequence")
    # s_2 = 1.350 > 1.2 with A > 0: its token takes -1.2 and no gradient; s_1 = 0.905 is inside
    assert out.loss.item() == pytest.approx((-2 * S1 - 1.2) / 3)
    assert out.clip_frac.item() == pytest.approx(1 / 3) and out.clip_frac_high.item() == pytest.approx(1 / 3)
    out.loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-S1 / 3, -S1 / 3, 0.0], [0.0, 0.0, 0.0]]))


def test_gspo_gradient_is_that_of_the_sequence_ratio_itself():
    """TRL's importance_sampling_level="sequence" differentiates s_i = exp(mean log-ratio); with
    per-sequence advantages the token trick gives the same gradient (seq_mean_token_mean here)."""
    adv = torch.tensor([[0.7, 0.7, 0.0], [-1.3, 0.0, 0.0]])
    old = torch.tensor([[0.1, -0.2, 0.0], [0.05, 0.0, 0.0]])
    weights = GSPO_MASK / GSPO_MASK.sum(-1, keepdim=True) / 2
    ours = GSPO_LOGP.clone().requires_grad_()
    ppo_policy_loss(ours, old, adv, GSPO_MASK, 0.5, weights, importance_sampling_level="sequence").loss.backward()
    trl = GSPO_LOGP.clone().requires_grad_()
    m = GSPO_MASK.float()
    s = torch.exp(((trl - old) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True))
    (torch.maximum(-adv * s, -adv * s.clamp(0.5, 1.5)) * weights).sum().backward()
    torch.testing.assert_close(ours.grad, trl.grad)


def test_rollout_weights_multiply_the_policy_term_only():
    logprobs = torch.zeros(1, 2, requires_grad=True)
    adv, mask, c = torch.tensor([[2.0, -1.0]]), torch.ones(1, 2), torch.tensor([[0.5, 3.0]])
    out = ppo_policy_loss(logprobs, torch.zeros(1, 2), adv, mask, rollout_weights=c)
    # ratio 1: mean(-A c) = (-2 * 0.5 + 1 * 3) / 2 = 1
    assert out.loss.item() == pytest.approx(1.0)
    out.loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.5, 1.5]]))
    # the entropy term is not reweighted: mean entropy (1 + 3) / 2 = 2, times entropy_coef 0.1
    total = ppo_loss(torch.zeros(1, 2), torch.tensor([[1.0, 3.0]]), None, torch.zeros(1, 2), None, adv, adv, mask,
                     0.2, 0.2, 0.1, 0.1, rollout_weights=c)
    assert total.loss.item() == pytest.approx(1.0 - 0.1 * 2)


@pytest.mark.parametrize("kw, message", [
    (dict(cliprange=0.2, cliprange_high=-0.1), "cliprange_high must be >= 0"),
    (dict(cliprange=1.5), r"cliprange must be in \(0, 1\)"),
    (dict(cliprange=0.2, importance_sampling_level="seq"), "importance_sampling_level must be token or sequence"),
])
def test_bad_policy_loss_options(kw, message):
    with pytest.raises(ConfigError, match=message):
        check_policy_loss_options(**kw)


def test_an_unknown_importance_sampling_level_is_refused_by_the_loss():
    with pytest.raises(ConfigError, match="importance_sampling_level"):
        ppo_policy_loss(RATIOS.log(), torch.zeros(1, 3), ADV, ONES, importance_sampling_level="tokens")


SCORES = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 8.0])  # two groups of 3


def test_scale_rewards_by_hand():
    # group means 2 and 6: centred [-1, 0, 1] and [-1, -1, 2]
    centred = torch.tensor([-1.0, 0.0, 1.0, -1.0, -1.0, 2.0])
    # group stds (unbiased): 1 and sqrt((1 + 1 + 4) / 2) = sqrt(3)
    group = centred / torch.tensor([1.0] * 3 + [math.sqrt(3)] * 3).add(1e-4)
    torch.testing.assert_close(scaled_group_advantages(SCORES, 3, "group"), group)
    # batch std of all 6 scores: mean 4, squared deviations 9 + 4 + 1 + 1 + 1 + 16 = 32, var 32 / 5
    torch.testing.assert_close(scaled_group_advantages(SCORES, 3, "batch"), centred / (math.sqrt(6.4) + 1e-4))
    torch.testing.assert_close(scaled_group_advantages(SCORES, 3, "none"), centred)
    with pytest.raises(ConfigError, match="scale_rewards must be one of group, batch, none"):
        scaled_group_advantages(SCORES, 3, "global")


def test_dynamic_sampling_keeps_the_groups_whose_scores_differ():
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.1, 0.1, 0.1])
    assert nonzero_std_groups(scores, 3).tolist() == [False, True, False]
    # seven equal float32 scores of 0.1: their std is 8e-9, not 0, yet the group carries no signal
    seven = torch.full((7,), 0.1)
    assert group_statistics(seven, 7)[1].item() == 0.0, "std == 0 misses this group"
    assert nonzero_std_groups(seven, 7).tolist() == [False]
    with pytest.raises(ConfigError, match="samples_per_prompt >= 2"):
        nonzero_std_groups(scores, 1)
