"""``PolicyWithValueHead``: a causal LM whose trunk also feeds a scalar value head."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers import PreTrainedModel

from lightning_rlhf.models.forward import lm_head_fp32, response_logits, trunk
from lightning_rlhf.models.lora import is_lora
from lightning_rlhf.rl.logprobs import logprobs_and_entropy, logprobs_from_logits


class PolicyWithValueHead(torch.nn.Module):
    """One trunk forward gives both the next-token logits and the values of the response.

    The value head is a linear layer on the last hidden state, initialised to zero (N-details P2),
    so no second network is trained. The LM head only runs on the positions that predict
    response tokens: (b, r, v) logits instead of (b, q + r, v).

    Args:
        lm: a Hugging Face causal LM whose ``base_model`` output feeds ``get_output_embeddings()``
            directly (GPT-2, Llama, Mistral, ...).
        critic: optional separate network (a causal LM whose trunk feeds the value head), as in
            TRL's current PPO; it costs a second trunk forward and backward.
        value_head: False for the critic-free estimators: no value parameters, no value forward,
            and ``forward`` returns None for the values.
    """

    def __init__(self, lm: PreTrainedModel, critic: PreTrainedModel | None = None, value_head: bool = True) -> None:
        super().__init__()
        self.lm = lm
        self.critic = critic
        self.value_head = torch.nn.Linear(lm.config.hidden_size, 1) if value_head else None
        if self.value_head is not None:
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and values at the positions that predict the last ``n_response`` tokens.

        Args:
            input_ids, attention_mask: (b, q + r) left-padded queries followed by responses.
        Returns:
            fp32 logits (b, r, v) and fp32 values (b, r): values[:, t] estimates the return before
            response token t is sampled; None without a value head.
        """
        hidden = trunk(self.lm, input_ids, attention_mask)[:, -n_response - 1: -1]
        logits = lm_head_fp32(self.lm, hidden)
        if self.value_head is None:
            return logits, None
        if self.critic is not None:
            hidden = trunk(self.critic, input_ids, attention_mask)[:, -n_response - 1: -1]
        with torch.autocast(hidden.device.type, enabled=False):
            values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return logits, values


def response_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    responses: torch.Tensor,
    temperature: float,
    micro_batch_size: int | None = None,
    disable_adapter: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of ``responses`` (b, r) and, for a ``PolicyWithValueHead``, values (b, r).

    Runs in micro-batches of ``micro_batch_size`` rows to bound the (rows, r, vocab) logits.
    With ``disable_adapter`` a LoRA policy's LM runs without its adapter: the reference.

    Args:
        input_ids, attention_mask: (b, q + r) queries followed by responses.
        responses: (b, r).
    """
    r = responses.shape[1]
    step = micro_batch_size or input_ids.shape[0]
    context = model.disable_adapter() if disable_adapter and is_lora(model) else nullcontext()
    logps, values = [], []
    with context:
        for i in range(0, input_ids.shape[0], step):
            ids, mask = input_ids[i: i + step], attention_mask[i: i + step]
            if isinstance(model, PolicyWithValueHead):
                logits, v = model(ids, mask, r)
                if v is not None:
                    values.append(v)
            else:
                logits = response_logits(model, ids, mask, r)
            logps.append(logprobs_from_logits(logits, responses[i: i + step], temperature))
    return torch.cat(logps), (torch.cat(values) if values else None)


def policy_outputs(
    policy: PolicyWithValueHead, input_ids: torch.Tensor, attention_mask: torch.Tensor, responses: torch.Tensor,
    temperature: float, with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs, entropies and values (None without a value head), each (b, r), of
    ``responses`` under ``policy``, with the graph for a backward pass; the entropy carries
    gradient only ``with_entropy`` (an entropy bonus).

    Args:
        input_ids, attention_mask: (b, q + r) queries followed by responses.
        responses: (b, r).
    """
    logits, values = policy(input_ids, attention_mask, responses.shape[1])
    logprobs, entropy = logprobs_and_entropy(logits, responses, temperature, with_entropy)
    return logprobs, entropy, values
