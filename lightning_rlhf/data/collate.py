"""Batch collation for the shapes the data module serves."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_rlhf.data.preferences import PAIR_FLOAT_COLUMNS


def pad_rows(rows: list[dict], pad_token_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``input_ids`` lists to the longest row: ids and attention mask, both (b, t)."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        span = slice(width - n, width) if left else slice(0, n)
        ids[i, span] = torch.tensor(r["input_ids"], dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


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
        ids, mask = pad_rows(rows, self.pad_token_id, left=True)
        return {"input_ids": ids, "attention_mask": mask}


@dataclass
class ClassificationCollator:
    """Right-pad tokenized reviews; returns ``input_ids``, ``attention_mask`` (b, t), ``labels`` (b,)."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_rows(rows, self.pad_token_id, left=False)
        labels = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass
class PreferenceCollator:
    """A prompt left-padded as for rollouts, its chosen and rejected responses right-padded to
    one width: ``queries``/``query_mask`` (b, q), ``chosen``/``chosen_mask`` and
    ``rejected``/``rejected_mask`` (b, r), and each pair's row ``index`` (b,) in its split. Masks
    are 1 on real tokens only, so prompt and padding positions carry no loss."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        queries, query_mask = pad_rows([{"input_ids": r["prompt_ids"]} for r in rows], self.pad_token_id, left=True)
        both = [{"input_ids": r[key]} for key in ("chosen_ids", "rejected_ids") for r in rows]
        responses, mask = pad_rows(both, self.pad_token_id, left=False)
        b = len(rows)
        return {"queries": queries, "query_mask": query_mask, "chosen": responses[:b], "chosen_mask": mask[:b],
                "rejected": responses[b:], "rejected_mask": mask[b:],
                "index": torch.tensor([r["index"] for r in rows], dtype=torch.long)}


@dataclass
class PairwiseCollator:
    """Whole chosen and rejected texts right-padded to one width: ``chosen_input_ids``,
    ``chosen_attention_mask``, ``rejected_input_ids``, ``rejected_attention_mask`` (b, t), each
    pair's row ``index`` (b,), and ``margin``, ``chosen_score``, ``rejected_score`` (b,) floats
    when the rows have them."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        both = [{"input_ids": r[key]} for key in ("chosen_input_ids", "rejected_input_ids") for r in rows]
        ids, mask = pad_rows(both, self.pad_token_id, left=False)
        b = len(rows)
        out = {"chosen_input_ids": ids[:b], "chosen_attention_mask": mask[:b],
               "rejected_input_ids": ids[b:], "rejected_attention_mask": mask[b:],
               "index": torch.tensor([r["index"] for r in rows], dtype=torch.long)}
        for key in PAIR_FLOAT_COLUMNS:
            if key in rows[0]:
                out[key] = torch.tensor([float(r[key]) for r in rows], dtype=torch.float32)
        return out
