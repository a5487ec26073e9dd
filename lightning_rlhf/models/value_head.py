"""``PolicyWithValueHead``: a causal LM whose trunk also feeds a scalar value head."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from lightning_rlhf.rl.logprobs import left_pad_position_ids


class PolicyWithValueHead(torch.nn.Module):
    """One trunk forward gives both the next-token logits and the values of the response.

    The value head is a linear layer on the last hidden state, initialised to zero (N-details P2),
    so no second network is trained. The LM head only runs on the positions that predict
    response tokens: (b, r, v) logits instead of (b, q + r, v).

    Args:
        lm: a Hugging Face causal LM whose ``base_model`` output feeds ``get_output_embeddings()``
            directly (GPT-2, Llama, Mistral, ...).
    """

    def __init__(self, lm: PreTrainedModel) -> None:
        super().__init__()
        self.lm = lm
        self.value_head = torch.nn.Linear(lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and values at the positions that predict the last ``n_response`` tokens.

        Args:
            input_ids, attention_mask: (b, q + r) left-padded queries followed by responses.
        Returns:
            logits (b, r, v) and values (b, r): values[:, t] estimates the return before
            response token t is sampled.
        """
        hidden = self.lm.base_model(
            input_ids=input_ids, attention_mask=attention_mask,
            position_ids=left_pad_position_ids(attention_mask),
        ).last_hidden_state
        hidden = hidden[:, -n_response - 1: -1]
        logits = self.lm.get_output_embeddings()(hidden)
        values = self.value_head(hidden).squeeze(-1).float()
        return logits, values
