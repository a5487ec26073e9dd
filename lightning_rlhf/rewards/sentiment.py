"""``SentimentClassifierReward``: the positive-label logit of any sequence classifier, or the one logit
of a one-label reward model (Bradley-Terry, ``RewardModelModule(objective="pairwise")``, TRL's
``RewardTrainer``)."""

from __future__ import annotations

from typing import Literal

import torch

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.export import model_context
from lightning_rlhf.models.loading import disable_dropout, load_sequence_classifier, load_tokenizer


def find_label_index(id2label: dict, positive_label: str) -> int:
    """Index of ``positive_label`` in ``id2label``, matched by name (case-insensitive).

    Never guess an index: TRL users trained towards the wrong sentiment for weeks after a
    pipeline changed label order (see the reference notes).
    """
    for index, label in id2label.items():
        if str(label).lower() == positive_label.lower():
            return int(index)
    raise ConfigError(
        f"the reward classifier has no label '{positive_label}'; its labels are "
        f"{sorted(map(str, id2label.values()))}. Set positive_label to the positive one."
    )


class SentimentClassifierReward(torch.nn.Module):
    """Score prompt + response text with a classifier and its own tokenizer.

    Runs batched, without grad, in eval mode, on whatever device the module is on. A classifier
    with one label is a reward model: its score is that logit, whatever its label is called
    (``positive_label`` is not looked up), and its probability is the logit's sigmoid (what
    ``pipeline("text-classification")`` reports for it).

    Args:
        model_name_or_path: Hub id or folder of an ``AutoModelForSequenceClassification``.
        positive_label: Name of the positive label in the classifier's ``id2label`` (ignored for
            a one-label reward model).
        output: ``logit`` (the positive label's logit) or ``probability`` (its softmax; the
            sigmoid of a one-label model's logit).
        batch_size: Texts per classifier forward.
        max_length: Truncation length; default the classifier's context.
    """

    def __init__(
        self,
        model_name_or_path: str = "lvwerra/distilbert-imdb",
        positive_label: str = "POSITIVE",
        output: Literal["logit", "probability"] = "logit",
        batch_size: int = 64,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        if output not in ("logit", "probability"):
            raise ConfigError(f"output must be 'logit' or 'probability', not '{output}'")
        self.tokenizer = load_tokenizer(model_name_or_path)
        self.model = load_sequence_classifier(model_name_or_path).eval()
        self.model.requires_grad_(False)
        disable_dropout(self.model)
        self.one_logit = self.model.config.num_labels == 1
        self.positive_index = 0 if self.one_logit else find_label_index(self.model.config.id2label, positive_label)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        context = model_context(self.model) or 512
        self.max_length = min(max_length or context, context)
        self.output = output
        self.batch_size = batch_size

    def train(self, mode: bool = True) -> SentimentClassifierReward:
        return super().train(False)  # frozen: always eval

    @torch.no_grad()
    def logits(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """(b, num_labels) float32 classifier logits of prompt + response, in batches."""
        texts = [p + r for p, r in zip(prompts, responses, strict=True)]
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start: start + self.batch_size], padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            ).to(device)
            out.append(self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits)
        return torch.cat(out).float()

    def forward(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Returns (b,) float32 scores on the classifier's device."""
        return self._score(self.logits(prompts, responses))

    def _score(self, logits: torch.Tensor) -> torch.Tensor:
        if self.output == "probability":
            return self._probability(logits)
        return logits[:, self.positive_index]

    def _probability(self, logits: torch.Tensor) -> torch.Tensor:
        if self.one_logit:
            return torch.sigmoid(logits[:, 0])
        return torch.softmax(logits, dim=-1)[:, self.positive_index]

    def positive_probability(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """(b,) probability of the positive label (a one-label model: the sigmoid of its logit)."""
        return self._probability(self.logits(prompts, responses))
