import pytest
import torch

from lightning_rlhf.rewards import ScoreNormalizer, ValidatedReward, import_reward_function


def count_word_good(prompts, responses):
    return [r.count("good") / max(1, len(r.split())) for r in responses]


def returns_matrix(prompts, responses):
    return torch.zeros(len(prompts), 2)


def returns_nan(prompts, responses):
    return [float("nan")] * len(prompts)


def test_import_path_and_validation():
    fn = ValidatedReward(import_reward_function("test_rewards:count_word_good"))
    scores = fn(["a", "b"], ["good good", "bad"])
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0]))
    assert import_reward_function("test_rewards.count_word_good") is count_word_good


def test_bad_import_paths():
    with pytest.raises(ImportError, match="cannot import module 'no_such_pkg.rewards'"):
        import_reward_function("no_such_pkg.rewards:score")
    with pytest.raises(ImportError, match="has no callable 'missing'"):
        import_reward_function("test_rewards:missing")
    with pytest.raises(ValueError, match="not an import path"):
        import_reward_function("score")


def test_wrong_shape_and_nan_are_named():
    with pytest.raises(ValueError, match=r"returned shape \(2, 2\) for 2 samples"):
        ValidatedReward(returns_matrix)(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="non-finite score.*sample 0"):
        ValidatedReward(returns_nan)(["a"], ["x"])


def test_score_normalizer():
    norm = ScoreNormalizer(enabled=True, clip=1.5)
    norm.fit(torch.tensor([1.0, 3.0, 5.0]))  # mean 3, std 2
    torch.testing.assert_close(norm(torch.tensor([3.0, 5.0, 13.0])), torch.tensor([0.0, 1.0, 1.5]))
    state = norm.state_dict()
    fresh = ScoreNormalizer(enabled=True)
    fresh.load_state_dict(state)
    assert fresh.fitted and fresh.shift.item() == 3.0 and fresh.scale.item() == 2.0
    assert ScoreNormalizer(enabled=False, clip=None)(torch.tensor([7.0])).item() == 7.0
