"""Loss aggregation: hand-computed weights, and one update whatever the micro-batch size."""

import lightning as L
import pytest
import torch
from fixed_rollout import LINEAR_ADAM, MODES, FixedRolloutPPO, flat_params
from helpers import make_dm

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.aggregation import aggregate, aggregation_for_loss_type, token_weights
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


# TRL's GRPO loss types by hand: 4 responses of 3, 1 | 4, 2 tokens in two pieces (micro-batches
# or ranks) of 2 rows; T = max_completion_length = 4. Per-token losses below; row sums 6, 4 | 4, 6
# and token means 2, 4 | 1, 3; the mini-batch holds N = 10 tokens and B = 4 responses.
TRL_MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
TRL_LOSS = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0], [2.0, 4.0, 9.0, 9.0]])
TRL_BY_HAND = {
    "dapo": 20 / 10,  # sum(m L) / N over the whole accumulated batch
    "bnpo": ((6 + 4) / 4 + (4 + 6) / 6) / 2,  # each piece's sum / its own tokens, averaged over pieces
    "grpo": ((2 + 4) / 2 + (1 + 3) / 2) / 2,  # each piece's mean of sequence token means, averaged
    "dr_grpo": (10 / (2 * 4) + 10 / (2 * 4)) / 2,  # each piece's sum / (its rows * T), averaged
}


def _pieces(rows: list[slice], loss_type: str, world: int = 1) -> float:
    agg = aggregation_for_loss_type(loss_type)
    return sum(aggregate(TRL_LOSS[r], token_weights(TRL_MASK[r], agg, 10, 4, max_tokens=4, scale=world)).item()
               for r in rows) / world


@pytest.mark.parametrize("loss_type", list(TRL_BY_HAND))
def test_trl_loss_types_by_hand(loss_type):
    halves = [slice(0, 2), slice(2, 4)]
    assert _pieces(halves, loss_type) == pytest.approx(TRL_BY_HAND[loss_type])
    # the same two pieces as two ranks: weights scaled by the world size, DDP's average divides
    assert _pieces(halves, loss_type, world=2) == pytest.approx(TRL_BY_HAND[loss_type])


def test_only_bnpo_depends_on_the_cut():
    whole, uneven = [slice(0, 4)], [slice(0, 3), slice(3, 4)]
    for loss_type in ("dapo", "grpo", "dr_grpo"):
        assert _pieces(whole, loss_type) == pytest.approx(TRL_BY_HAND[loss_type])
        assert _pieces(uneven, loss_type) == pytest.approx(TRL_BY_HAND[loss_type])
    # bnpo in one piece is dapo; in pieces of 3 and 1 rows: 14 / 8 weighted 3/4 plus 6 / 2 weighted 1/4
    assert _pieces(whole, "bnpo") == pytest.approx(TRL_BY_HAND["dapo"])
    assert _pieces(uneven, "bnpo") == pytest.approx(14 / 8 * 3 / 4 + 6 / 2 * 1 / 4)


def test_loss_types_map_onto_the_aggregations():
    assert {t: aggregation_for_loss_type(t) for t in ("grpo", "dr_grpo", "dapo", "bnpo")} == {
        "grpo": "seq_mean_token_mean", "dr_grpo": "seq_mean_token_sum_norm", "dapo": "token_mean",
        "bnpo": "local_token_mean"}
    with pytest.raises(ConfigError, match="loss_type must be one of grpo, dr_grpo, dapo, bnpo, not 'cispo'"):
        aggregation_for_loss_type("cispo")


def _update(tiny_gpt2, tokenizer_dir, imdb_dir, tmp_path, **kw) -> torch.Tensor:
    module = FixedRolloutPPO(policy_name_or_path=None, policy_config=tiny_gpt2, tokenizer_name_or_path=tokenizer_dir,
                             reward_model=None, reward_fn="helpers:char_count", response_min_tokens=16,
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
