"""Batch collation for the three shapes the data module serves."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LMBlockCollator:
    """Stack equal-length token blocks: ``input_ids``, ``attention_mask``, ``labels``, all (b, t)."""

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([r["input_ids"] for r in rows], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


@dataclass
class LeftPadCollator:
    """Left-pad prompts so every query ends at the same column and generation appends to it.

    Returns ``input_ids`` and ``attention_mask`` of shape (b, q) where q is the longest prompt.
    """

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, width - n:] = torch.tensor(r["input_ids"], dtype=torch.long)
            mask[i, width - n:] = 1
        return {"input_ids": ids, "attention_mask": mask}


@dataclass
class ClassificationCollator:
    """Right-pad tokenized reviews; returns ``input_ids``, ``attention_mask`` (b, t), ``labels`` (b,)."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"], dtype=torch.long)
            mask[i, :n] = 1
        labels = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
