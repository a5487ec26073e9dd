"""A bag-of-n-grams sentiment classifier (fastText-style) as a Hugging Face model.

The offline task's gold judge: a judge must be clearly better than the reward model and must
not share its failure modes. Small transformers trained from scratch on IMDB stop near 0.85
accuracy; the mean embedding of a review's token uni-, bi- and tri-grams (hashed into buckets)
followed by a linear layer reaches about 0.91 in a minute on a CPU, as TF-IDF logistic
regression and NBSVM do (Joulin et al. 2016, Wang & Manning 2012).

This file imports only torch and transformers: ``save_pretrained`` copies it next to the
weights, so ``transformers.pipeline("text-classification", model=folder,
trust_remote_code=True)`` loads an export without this package. Importing
``lightning_rlhf`` registers it with the Auto classes, so no remote code is needed there.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

_PRIME = 1_000_003


class BagOfNgramsConfig(PretrainedConfig):
    """Args:
    vocab_size: The tokenizer's vocabulary (unigram embeddings).
    ngram_buckets: Hash buckets for each n > 1 (bigrams and trigrams get a table each).
    max_ngram: Longest n-gram (1 to 3).
    embed_dim: Size of every n-gram embedding.
    max_position_embeddings: Tokens read per text (the tokenizer truncates here).
    pad_token_id: The tokenizer's padding token (ignored by the model: the mask drops padding).
    """

    model_type = "bag-of-ngrams"

    def __init__(self, vocab_size: int = 8192, ngram_buckets: int = 262144, max_ngram: int = 3,
                 embed_dim: int = 16, max_position_embeddings: int = 1024, pad_token_id: int | None = None,
                 **kwargs) -> None:
        if not 1 <= max_ngram <= 3:
            raise ValueError(f"max_ngram must be 1, 2 or 3, got {max_ngram}")
        self.vocab_size = vocab_size
        self.ngram_buckets = ngram_buckets
        self.max_ngram = max_ngram
        self.embed_dim = embed_dim
        self.max_position_embeddings = max_position_embeddings
        self.pad_token_id = pad_token_id
        super().__init__(**kwargs)


def ngram_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int, buckets: int,
              max_ngram: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ids into one table [unigrams | bigram buckets | trigram buckets] and their mask.

    Args:
        input_ids, attention_mask: (b, t), padded on either side.
    Returns:
        (b, m) ids and (b, m) mask, m = t + (t - 1) + (t - 2) for max_ngram 3; an n-gram is
        kept only when all its tokens are real (the mask product).
    """
    ids, mask = [input_ids], [attention_mask]
    hashed, keep = input_ids, attention_mask
    for n in range(2, max_ngram + 1):
        hashed = hashed[:, :-1] * _PRIME + input_ids[:, n - 1:]
        keep = keep[:, :-1] * attention_mask[:, n - 1:]
        ids.append(vocab_size + (n - 2) * buckets + hashed % buckets)
        mask.append(keep)
    return torch.cat(ids, 1), torch.cat(mask, 1)


class BagOfNgramsForSequenceClassification(PreTrainedModel):
    """Mean of the n-gram embeddings of each text, then a linear layer: (b, t) -> (b, num_labels)."""

    config_class = BagOfNgramsConfig
    base_model_prefix = "bag_of_ngrams"

    def __init__(self, config: BagOfNgramsConfig) -> None:
        super().__init__(config)
        rows = config.vocab_size + (config.max_ngram - 1) * config.ngram_buckets
        self.embeddings = torch.nn.Embedding(rows, config.embed_dim)
        self.classifier = torch.nn.Linear(config.embed_dim, config.num_labels)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        if isinstance(module, torch.nn.Embedding):
            torch.nn.init.uniform_(module.weight, -0.01, 0.01)
        elif isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.02)
            torch.nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        c = self.config
        ids, mask = ngram_ids(input_ids, attention_mask.long(), c.vocab_size, c.ngram_buckets, c.max_ngram)
        mask = mask.unsqueeze(-1).to(self.embeddings.weight.dtype)
        pooled = (self.embeddings(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(pooled)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
