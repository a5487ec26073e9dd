"""Loss aggregation: hand-computed weights, and one update whatever the micro-batch size."""

import lightning as L
import pytest
import torch
from fixed_rollout import LINEAR_ADAM, MODES, FixedRolloutPPO, flat_params
from test_ppo import make_dm

from lightning_rlhf.rl.aggregation import aggregate, token_weights
from lightning_rlhf.rl.losses import ppo_policy_loss

MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])  # 3 + 1 tokens, 2 sequences
X = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])


def test_token_mean_weights():
    w = token_weights(MASK, "token_mean", total_tokens=4, total_sequences=2)
    assert aggregate(X, w).item() == pytest.approx((1 + 2 + 3 + 4) / 4)


def test_seq_mean_token_mean_weights():
    w = token_weights(MASK, "seq_mean_token_mean", total_tokens=4, total_sequences=2)
    assert aggregate(X, w).item() == pytest.approx(((1 + 2 + 3) / 3 + 4 / 1) / 2)


def test_seq_mean_token_sum_norm_weights():
    w = token_weights(MASK, "seq_mean_token_sum_norm", total_tokens=4, total_sequences=2, max_tokens=4)
    assert aggregate(X, w).item() == pytest.approx((1 + 2 + 3 + 4) / (4 * 2))
    with pytest.raises(ValueError, match="needs max_tokens"):
        token_weights(MASK, "seq_mean_token_sum_norm", 4, 2)


def test_pieces_add_up_to_the_whole():
    """Row 0 and row 1 as separate micro-batches (or ranks) sum to the whole batch's aggregate."""
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        whole = aggregate(X, token_weights(MASK, mode, 4, 2, max_tokens=4))
        parts = sum(aggregate(X[i: i + 1], token_weights(MASK[i: i + 1], mode, 4, 2, max_tokens=4)) for i in (0, 1))
        assert parts.item() == pytest.approx(whole.item())
    # scale=world undoes DDP's gradient averaging: 2 ranks' scaled pieces average to the whole
    w = [token_weights(MASK[i: i + 1], "token_mean", 4, 2, scale=2) for i in (0, 1)]
    assert ((aggregate(X[:1], w[0]) + aggregate(X[1:], w[1])) / 2).item() == pytest.approx(2.5)


def test_policy_loss_with_weights_equals_token_mean_by_default():
    logp = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-0.3, 0.0, 0.0, 0.0]])
    adv = torch.tensor([[1.0, -1.0, 2.0, 0.0], [0.5, 0.0, 0.0, 0.0]])
    default = ppo_policy_loss(logp, logp, adv, MASK)
    weighted = ppo_policy_loss(logp, logp, adv, MASK, weights=token_weights(MASK, "token_mean", 4, 2))
    # ratio 1: loss = -mean(A) over the 4 real tokens
    assert default.loss.item() == pytest.approx(-(1 - 1 + 2 + 0.5) / 4)
    assert weighted.loss.item() == pytest.approx(default.loss.item())


def _update(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, **kw) -> torch.Tensor:
    module = FixedRolloutPPO(policy_name_or_path=None, policy_config=tiny_gpt2, tokenizer_name_or_path=tokenizer_dir,
                             reward_model=None, reward_fn="test_ppo:char_count", response_min_tokens=16,
                             response_max_tokens=16, **LINEAR_ADAM, **kw)
    before = flat_params(module)
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
              enable_progress_bar=False, enable_model_summary=False).fit(module, make_dm(imdb_dir, tokenizer_dir))
    return flat_params(module) - before


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "critic_free", "jbond"])
def test_micro_batching_does_not_change_the_update(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, aggregation):
    kw = MODES[aggregation] if aggregation in MODES else dict(loss_aggregation=aggregation)
    whole = _update(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, **kw)
    micro = _update(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, **kw, micro_batch_size=2)
    assert whole.norm() > 0
    assert ((whole - micro).norm() / whole.norm()).item() < 1e-5
