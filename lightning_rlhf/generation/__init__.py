"""The rollout engine: sampling responses from any Hugging Face causal LM.

``sampler`` (``Sampler``, ``sample_responses``) runs a rollout: the eager prefill and KV-cache
loop (``eager``) or the compiled static-cache step (``static_step``), both drawing tokens with
``token_sampling``; ``texts`` goes from prompt strings to decoded continuations.
"""

from lightning_rlhf.generation.sampler import Sampler, sample_responses
from lightning_rlhf.generation.texts import (
    decode_responses,
    decode_with_prompts,
    encode_prompts,
    generate_texts,
    kept_tokens,
)

__all__ = ["Sampler", "decode_responses", "decode_with_prompts", "encode_prompts", "generate_texts", "kept_tokens",
           "sample_responses"]
