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


def _sentencepiece_style_tokenizer():
    """Word-level with Llama's Metaspace pre-tokenizer and decoder: a sequence's first word is
    decoded without its space, as a Llama or Mistral tokenizer does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "▁the": 2, "▁movie": 3, "▁was": 4, "▁great": 5}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer, core.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>")


def test_a_response_is_decoded_after_its_prompt_so_the_reward_reads_the_whole_text():
    """The reward model reads ``prompt + response``: decoded alone, a SentencePiece response loses
    its leading space ("the moviewas great"); decoded after its (left-padded) prompt it keeps it,
    and a response's padding after its stop is still dropped."""
    from lightning_rlhf.generation.texts import decode_responses

    tok = _sentencepiece_style_tokenizer()
    prompts, prompt_mask = torch.tensor([[1, 2, 3], [2, 3, 4]]), torch.tensor([[0, 1, 1], [1, 1, 1]])
    responses, response_mask = torch.tensor([[4, 5], [5, 1]]), torch.tensor([[1, 1], [1, 0]])
    assert decode_responses(tok, responses, response_mask) == ["was great", "great"]
    texts = decode_responses(tok, responses, response_mask, after=(prompts, prompt_mask))
    assert texts == [" was great", " great"]
    heads = decode_responses(tok, prompts, prompt_mask)
    assert [h + t for h, t in zip(heads, texts, strict=True)] == ["the movie was great", "the movie was great"]
