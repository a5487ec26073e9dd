"""DPO, IPO and hinge losses against hand-computed values (log-probs given)."""

import math

import pytest
import torch

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.dpo import dpo_loss, sequence_logprobs

# two pairs: h = (pc - rc) - (pr - rr) = (−3 + 4) − (−5 + 4) = 2 and (−6 + 5) − (−2 + 3) = −2
PC, PR = torch.tensor([-3.0, -6.0]), torch.tensor([-5.0, -2.0])
RC, RR = torch.tensor([-4.0, -5.0]), torch.tensor([-4.0, -3.0])


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_sigmoid_loss_and_implicit_rewards():
    out = dpo_loss(PC, PR, RC, RR, beta=0.5)
    assert out.loss.item() == pytest.approx(-(log_sigmoid(1.0) + log_sigmoid(-1.0)) / 2)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.5, -0.5]))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.5]))


def test_label_smoothing():
    out = dpo_loss(PC, PR, RC, RR, beta=0.5, label_smoothing=0.1)
    pair1 = -0.9 * log_sigmoid(1.0) - 0.1 * log_sigmoid(-1.0)
    pair2 = -0.9 * log_sigmoid(-1.0) - 0.1 * log_sigmoid(1.0)
    assert out.loss.item() == pytest.approx((pair1 + pair2) / 2)


def test_ipo_and_hinge():
    # IPO: (h − 1/(2·0.5))² = (2 − 1)², (−2 − 1)²; hinge: max(0, 1 − 0.5·h) = 0, 2
    assert dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="ipo").loss.item() == pytest.approx((1 + 9) / 2)
    assert dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="hinge").loss.item() == pytest.approx((0 + 2) / 2)


def test_the_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    dpo_loss(pc, pr, RC, RR, beta=0.5).loss.backward()
    # d/dpc of −log σ(β h) / 2 = −β σ(−β h) / 2
    torch.testing.assert_close(pc.grad, torch.tensor([-0.25 / (1 + math.e), -0.25 / (1 + math.exp(-1))]))
    torch.testing.assert_close(pr.grad, -pc.grad)


def test_sequence_logprobs_ignore_prompt_and_padding():
    token = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(sequence_logprobs(token, mask), torch.tensor([-3.0, -0.5]))


@pytest.mark.parametrize("kw, message", [
    (dict(loss_type="kto"), "loss_type must be one of"),
    (dict(label_smoothing=0.5), r"label_smoothing must be in \[0, 0.5\)"),
    (dict(loss_type="ipo", label_smoothing=0.1), "sigmoid loss only"),
])
def test_bad_settings(kw, message):
    with pytest.raises(ConfigError, match=message):
        dpo_loss(PC, PR, RC, RR, **kw)
