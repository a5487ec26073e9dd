from transformers import AutoConfig, AutoModelForSequenceClassification

from lightning_rlhf.models.bag_of_ngrams import BagOfNgramsConfig, BagOfNgramsForSequenceClassification
from lightning_rlhf.models.loading import (
    disable_dropout,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
)

# Our loaders find the bag-of-n-grams judge by its model_type; save_pretrained also ships its code
# (config.auto_map), so transformers.pipeline(..., trust_remote_code=True) loads it without this package.
AutoConfig.register(BagOfNgramsConfig.model_type, BagOfNgramsConfig, exist_ok=True)
AutoModelForSequenceClassification.register(BagOfNgramsConfig, BagOfNgramsForSequenceClassification, exist_ok=True)
BagOfNgramsConfig.register_for_auto_class()
BagOfNgramsForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = ["BagOfNgramsConfig", "BagOfNgramsForSequenceClassification", "disable_dropout", "load_causal_lm",
           "load_sequence_classifier", "load_tokenizer"]
