"""Truncated importance weights between the sampler and the trainer, against hand-computed values."""

import math

import pytest
import torch

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.losses import ppo_policy_loss
from lightning_rlhf.rl.rollout_correction import check_rollout_correction, rollout_correction_weights

# two responses: 2 tokens (then padding) and 3 tokens; old - sampler log-probs are the logs of the
# ratios 2, 4 | 0.5, 1.5, 1.2 (the padding's difference, log 100, must not count)
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
DIFF = torch.tensor([[2.0, 4.0, 100.0], [0.5, 1.5, 1.2]]).log()
OLD = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.7, -0.9]])
SAMPLER = OLD - DIFF


def test_token_tis_by_hand():
    out = rollout_correction_weights(OLD, SAMPLER, MASK, "token_tis", cap=3.0)
    torch.testing.assert_close(out.weights, torch.tensor([[2.0, 3.0, 0.0], [0.5, 1.5, 1.2]]))
    # over the 5 response tokens: mean (2 + 4 + 0.5 + 1.5 + 1.2) / 5 = 1.84, max 4, one of 5 truncated
    assert out.ratio_mean.item() == pytest.approx(1.84) and out.ratio_max.item() == pytest.approx(4.0)
    assert out.frac_truncated.item() == pytest.approx(0.2) and out.frac_masked.item() == 0


def test_sequence_tis_by_hand():
    out = rollout_correction_weights(OLD, SAMPLER, MASK, "sequence_tis", cap=3.0)
    # sequence ratios 2 * 4 = 8 (cut to 3) and 0.5 * 1.5 * 1.2 = 0.9
    torch.testing.assert_close(out.weights, torch.tensor([[3.0, 3.0, 0.0], [0.9, 0.9, 0.9]]))
    assert out.ratio_mean.item() == pytest.approx((8 + 0.9) / 2) and out.ratio_max.item() == pytest.approx(8.0)
    assert out.frac_truncated.item() == pytest.approx(0.5) and out.frac_masked.item() == 0


def test_sequence_mask_by_hand():
    out = rollout_correction_weights(OLD, SAMPLER, MASK, "sequence_mask", cap=3.0)
    # 8 > 3: the first response is dropped; the second keeps its ratio 0.9 (TRL's sequence_mask)
    torch.testing.assert_close(out.weights, torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]]))
    assert out.frac_masked.item() == pytest.approx(0.5) and out.frac_truncated.item() == 0
    wide = rollout_correction_weights(OLD, SAMPLER, MASK, "sequence_mask", cap=10.0)
    torch.testing.assert_close(wide.weights, torch.tensor([[8.0, 8.0, 0.0], [0.9, 0.9, 0.9]]))
    assert wide.frac_masked.item() == 0


def test_none_gives_unit_weights_and_still_measures_the_mismatch():
    out = rollout_correction_weights(OLD, SAMPLER, MASK, "none")
    torch.testing.assert_close(out.weights, MASK.float())
    assert out.ratio_mean.item() == pytest.approx(1.84) and out.ratio_max.item() == pytest.approx(4.0)
    assert out.frac_truncated.item() == out.frac_masked.item() == 0


def test_the_weights_carry_no_gradient_and_scale_the_policy_loss():
    old = OLD.clone().requires_grad_()
    out = rollout_correction_weights(old, SAMPLER, MASK, "token_tis")
    assert not out.weights.requires_grad
    adv = torch.ones(2, 3)
    loss = ppo_policy_loss(OLD, OLD, adv, MASK, rollout_weights=out.weights).loss
    # ratio 1, A = 1: -mean over the 5 tokens of the weights (2 + 3 + 0.5 + 1.5 + 1.2) / 5
    assert loss.item() == pytest.approx(-8.2 / 5)


def test_a_huge_sequence_ratio_is_cut_or_masked_not_nan():
    sampler = OLD - torch.tensor([[60.0, 60.0, 0.0], [0.0, 0.0, 0.0]])  # exp(120) overflows float32
    tis = rollout_correction_weights(OLD, sampler, MASK, "sequence_tis")
    masked = rollout_correction_weights(OLD, sampler, MASK, "sequence_mask")
    assert tis.weights[0, :2].tolist() == [3.0, 3.0] and masked.weights[0].tolist() == [0.0, 0.0, 0.0]
    assert torch.isfinite(tis.weights).all() and torch.isfinite(masked.weights).all()
    assert math.isinf(tis.ratio_max.item())


@pytest.mark.parametrize("mode, cap, message", [
    ("token_tis", 1.0, "cap must be > 1"),
    ("sequence_mask", 0.5, "cap must be > 1"),
    ("icepop", 3.0, "rollout_correction must be one of none, token_tis, sequence_tis, sequence_mask"),
])
def test_bad_settings(mode, cap, message):
    with pytest.raises(ConfigError, match=message):
        check_rollout_correction(mode, cap)
    with pytest.raises(ConfigError, match=message):
        rollout_correction_weights(OLD, SAMPLER, MASK, mode, cap)
