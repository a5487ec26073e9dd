from lightning_rlhf.models.loading import (
    disable_dropout,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
)

__all__ = ["disable_dropout", "load_causal_lm", "load_sequence_classifier", "load_tokenizer"]
