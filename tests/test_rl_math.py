"""Pure RL functions against values computed by hand."""

import math

import pytest
import torch

from lightning_rlhf.rl.advantages import compute_gae, masked_mean, masked_whiten, per_token_rewards
from lightning_rlhf.rl.kl import AdaptiveKLController, FixedKLController, kl_estimate
from lightning_rlhf.rl.logprobs import left_pad_position_ids, logprobs_from_logits
from lightning_rlhf.rl.losses import ppo_policy_loss, ppo_value_loss
from lightning_rlhf.rl.masking import ends_with_eos, last_token_index, response_mask_after_stop


def test_gae_on_four_tokens():
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, -0.1, 0.3]])
    mask = torch.ones(1, 4)
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # deltas: t3 = 1 - 0.3 = 0.7; t2 = 0 + 0.3 + 0.1 = 0.4; t1 = -0.1 - 0.2 = -0.3; t0 = 0.2 - 0.5 = -0.3
    # A3 = 0.7; A2 = 0.4 + 0.5 * 0.7 = 0.75; A1 = -0.3 + 0.375 = 0.075; A0 = -0.3 + 0.0375 = -0.2625
    torch.testing.assert_close(adv, torch.tensor([[-0.2625, 0.075, 0.75, 0.7]]))
    torch.testing.assert_close(ret, adv + values)


def test_gae_ignores_tokens_after_the_stop():
    rewards = torch.tensor([[0.0, 2.0, 9.0, 9.0]])
    values = torch.tensor([[1.0, 1.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=1.0)
    # A1 = 2 - 1 = 1 (value after the stop is 0); A0 = 0 + 0.9 * 1 - 1 + 0.9 * 1 = 0.8
    torch.testing.assert_close(adv, torch.tensor([[0.8, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[1.8, 2.0, 0.0, 0.0]]))


def test_masked_whiten_and_mean():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert masked_mean(x, mask).item() == 2.0
    out = masked_whiten(x, mask)
    # mean 2, unbiased var 1 -> [-1, 0, 1], masked entry 0
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-4, rtol=0)
    kept = masked_whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(kept, torch.tensor([[1.0, 2.0, 3.0, 0.0]]), atol=1e-4, rtol=0)


def test_kl_estimators():
    logp = torch.tensor([math.log(0.5), math.log(0.2)])
    ref = torch.tensor([math.log(0.25), math.log(0.4)])
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), torch.tensor([math.log(2), math.log(0.5)]))
    # k3 = (r - 1) - log r with r = q/p: r = 0.5 -> 0.5 - 1 + log 2; r = 2 -> 1 - log 2
    expected = torch.tensor([-0.5 + math.log(2), 1 - math.log(2)])
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), expected)
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_estimate(logp, ref, "k9")


def test_adaptive_kl_controller_update_rule():
    ctl = AdaptiveKLController(kl_coef=0.2, target=6.0, horizon=10000)
    ctl.update(current_kl=9.0, n_steps=128)  # error = min(9/6 - 1, 0.2) = 0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 128 / 10000))
    ctl.update(current_kl=5.4, n_steps=256)  # error = -0.1
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 128 / 10000) * (1 - 0.1 * 256 / 10000))
    restored = AdaptiveKLController(0.2, 6.0, 10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.05


def test_mask_after_eos_and_score_on_last_real_token():
    eos = 9
    responses = torch.tensor([[4, 9, 5, 6], [4, 5, 6, 7], [9, 1, 1, 1]])
    mask = response_mask_after_stop(responses, eos)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert last_token_index(mask).tolist() == [1, 3, 0]
    assert ends_with_eos(responses, mask, eos).tolist() == [True, False, True]
    capped = response_mask_after_stop(responses, eos, max_lengths=torch.tensor([4, 2, 3]))
    assert capped.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]]

    scores = torch.tensor([1.0, 2.0, 3.0])
    kl = torch.full((3, 4), 0.5)
    rewards = per_token_rewards(scores, kl * mask, kl_coef=0.1, response_mask=mask)
    expected = torch.tensor([[-0.05, 0.95, 0, 0], [-0.05, -0.05, -0.05, 1.95], [2.95, 0, 0, 0]])
    torch.testing.assert_close(rewards, expected)


def test_policy_loss_clipping_by_hand():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, 1.0]])
    stats = ppo_policy_loss(new, old, adv, torch.ones(1, 2), cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5
    assert stats.loss.item() == pytest.approx((-1.2 - 0.5) / 2)
    assert stats.clip_frac.item() == pytest.approx(0.5)
    assert stats.ratio_max.item() == pytest.approx(1.5)


def test_value_loss_clipping_by_hand():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    ret = torch.tensor([[2.0, 0.0]])
    stats = ppo_value_loss(new, old, ret, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: max((1-2)^2, (0.2-2)^2) = 3.24; token 1: max(0.01, 0.01) = 0.01
    assert stats.loss.item() == pytest.approx(0.5 * (3.24 + 0.01) / 2)
    assert stats.clip_frac.item() == pytest.approx(0.5)


def test_logprobs_use_the_temperature():
    logits = torch.tensor([[[2.0, 0.0]]])
    lp = logprobs_from_logits(logits, torch.tensor([[0]]), temperature=2.0)
    assert lp.item() == pytest.approx(math.log(math.e / (math.e + 1)))


def test_logprobs_and_entropy_in_one_pass():
    from lightning_rlhf.rl.logprobs import logprobs_and_entropy

    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    tokens = torch.tensor([[0, 1]])
    logp, ent = logprobs_and_entropy(logits, tokens, temperature=2.0)
    torch.testing.assert_close(logp, logprobs_from_logits(logits, tokens, 2.0))
    p = math.e / (math.e + 1)  # softmax([2, 0] / 2)
    assert ent[0, 0].item() == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
    assert ent[0, 1].item() == pytest.approx(math.log(2))  # uniform over two tokens
    assert logp.requires_grad and not ent.requires_grad
    assert logprobs_and_entropy(logits, tokens, entropy_grad=True)[1].requires_grad


def test_left_pad_position_ids():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert left_pad_position_ids(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


class _AlwaysToken(torch.nn.Module):
    """A stand-in causal LM whose next token is always ``token``; counts its trunk calls."""

    def __init__(self, token: int, vocab: int = 5) -> None:
        super().__init__()
        self.calls = 0
        self.head = torch.nn.Linear(1, vocab)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.fill_(-1e4)
            self.head.bias[token] = 0.0

    @property
    def base_model(self):
        return self.trunk

    def trunk(self, input_ids, attention_mask, position_ids, use_cache=True, past_key_values=None):
        from types import SimpleNamespace

        self.calls += 1
        return SimpleNamespace(last_hidden_state=torch.ones(*input_ids.shape, 1), past_key_values=None)

    def get_output_embeddings(self):
        return self.head


def test_sampling_stops_early_once_every_row_has_ended():
    from lightning_rlhf.generation import sample_responses

    ids, mask = torch.tensor([[0, 3], [2, 3]]), torch.tensor([[0, 1], [1, 1]])
    model = _AlwaysToken(token=4)
    out = sample_responses(model, ids, mask, max_new_tokens=10, eos_token_id=4, pad_token_id=0)
    assert out.tolist() == [[4], [4]] and model.calls == 1
    model = _AlwaysToken(token=2)
    out = sample_responses(model, ids, mask, max_new_tokens=3, eos_token_id=4, pad_token_id=0)
    assert out.shape == (2, 3) and model.calls == 3


def test_missing_eos_ignores_rows_cut_by_the_length_draw():
    from lightning_rlhf.rl.masking import missing_eos

    eos = 9
    responses = torch.tensor([[5, 6, 7, 8], [5, 9, 0, 0], [5, 6, 0, 0], [5, 6, 7, 9]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])  # row 2: drawn length 2
    assert missing_eos(responses, mask, eos, max_tokens=4).tolist() == [True, False, False, False]
    assert not missing_eos(responses, mask, None, max_tokens=4).any()
