"""KV-cached ancestral sampling from left-padded prompts, with an explicit RNG.

Our own loop rather than ``generate``: it samples from the plain temperature-scaled
distribution (no top-k/top-p, as PPO's log-probs assume), draws from a ``torch.Generator``
whose state goes into checkpoints (exact resume), and stops as soon as every row has hit EOS.

With ``compile_generation`` the prompt's prefill stays the eager ``transformers`` forward and
every later token comes from one compiled graph on a static KV cache (``generation.static_step``);
both paths share ``sample_token`` and the same noise draws, so they give the same tokens for the
same generator state. A ``Sampler`` owns the compiled decoders it made; ``sample_responses``
uses the one attached to the model unless given another.
"""

from __future__ import annotations

import weakref

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_rlhf.generation.eager import CachedDecoder, Decoded, Draw, eager_steps
from lightning_rlhf.generation.static_step import StaticDecoder
from lightning_rlhf.rl.logprobs import left_pad_position_ids

ATTACHED = "_lightning_rlhf_sampler"  # the model attribute that holds the model's own sampler


class Sampler:
    """Samples responses from causal LMs; owns the compiled decoders it made, one per model.

    The decoders are keyed weakly by their model and hold it weakly, so a model is freed, with
    its decoder (compiled-step state, static caches, the pre-cast trunk copy under autocast), as
    soon as nothing else holds it; deleting the sampler frees every decoder it made. Copies and
    pickles of a sampler start empty (a deep-copied model gets a sampler of its own).

    Args:
        compile_generation: default of ``sample``'s ``compile_generation``.
    """

    def __init__(self, compile_generation: bool = False) -> None:
        self.compile_generation = compile_generation
        self._decoders: weakref.WeakKeyDictionary[torch.nn.Module, StaticDecoder | None] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model: torch.nn.Module) -> Sampler:
        """The sampler attached to ``model`` (made on first use): it lives and dies with the model."""
        sampler = model.__dict__.get(ATTACHED)
        if sampler is None:
            sampler = cls()
            object.__setattr__(model, ATTACHED, sampler)
        return sampler

    def __deepcopy__(self, memo: dict) -> Sampler:
        return Sampler(self.compile_generation)

    def __getstate__(self) -> dict:
        return {"compile_generation": self.compile_generation}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def decoder(self, model: torch.nn.Module) -> StaticDecoder | None:
        """The model's compiled decoder, made on first use; None (after one notice) where there is none."""
        if model not in self._decoders:
            why = StaticDecoder.supports(model)
            if why is not None:
                rank_zero_warn(f"compile_generation: {why}; sampling with the eager loop")
            self._decoders[model] = StaticDecoder(model) if why is None else None
        return self._decoders[model]

    @torch.no_grad()
    def sample(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        draw: Draw,
        samples_per_prompt: int = 1,
        compile_generation: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(b * k, n) responses and their (b * k, n) float32 log-probs; see ``sample_responses``."""
        compile_generation = self.compile_generation if compile_generation is None else compile_generation
        was_training = model.training
        model.eval()  # KV cache needs eval mode under gradient checkpointing; dropout is off anyway
        try:
            static = self.decoder(model) if compile_generation else None
            return self._sample(model, input_ids, attention_mask, draw, samples_per_prompt, static)
        finally:
            model.train(was_training)

    def _sample(self, model, input_ids, attention_mask, draw, k, static) -> tuple[torch.Tensor, torch.Tensor]:
        position_ids = left_pad_position_ids(attention_mask)
        decode = CachedDecoder(model)
        logits = decode(input_ids, attention_mask, position_ids)
        if k > 1:
            logits = logits.repeat_interleave(k, dim=0)
            attention_mask = attention_mask.repeat_interleave(k, dim=0)
            position_ids = position_ids.repeat_interleave(k, dim=0)
            decode.repeat_rows(k)
        decoded = Decoded(torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device))
        decoded.append(*draw.next_token(logits, decoded.finished))
        if not decoded.done(draw) and static is not None:
            first = Decoded(decoded.finished, list(decoded.tokens), list(decoded.logprobs))
            rng = _rng_state(draw.generator, logits.device)
            try:
                return static.run(decoded, draw, attention_mask, position_ids, decode.cache).stacked()
            except Exception as err:  # noqa: BLE001 - any compile/backend failure falls back to the eager loop
                self._decoders[model] = None
                rank_zero_warn(f"compile_generation: compiling the decode step failed ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''}); sampling with the eager loop")
                decoded = first
                _set_rng_state(draw.generator, logits.device, rng)
        return eager_steps(decode, decoded, draw, attention_mask, position_ids).stacked()


@torch.no_grad()
def sample_responses(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
    samples_per_prompt: int = 1,
    greedy: bool = False,
    return_logprobs: bool = False,
    compile_generation: bool = False,
    sampler: Sampler | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``max_new_tokens`` tokens per prompt, ``samples_per_prompt`` times each.

    Args:
        model: a Hugging Face causal LM (or a peft wrapper of one); the next-token logits come
            from its trunk and an fp32 LM head (``models.forward``), also under autocast.
        input_ids, attention_mask: (b, q) left-padded prompts.
        eos_token_id: stop token; rows that finished get ``pad_token_id`` afterwards, and the
            loop ends early once every row finished. None samples the full length.
        samples_per_prompt: k responses per prompt. The prompts are encoded once and their KV
            cache is repeated k times, so rows ``i * k .. i * k + k - 1`` answer prompt i; the
            draws are those of sampling from the prompts repeated with ``repeat_interleave``.
        greedy: take the most likely token instead of sampling (ReMax's baseline).
        return_logprobs: also return the sampler's own log-prob of each token under
            ``softmax(logits / temperature)`` from the cached decode (0 after a row's EOS): what
            the trainer's forward must reproduce (``rl.logprobs.logprob_mismatch``).
        compile_generation: decode with the compiled static-cache step (compiled once per model
            and shape, then reused); models without one, or where compiling fails, fall back to
            the eager loop with a one-line notice.
        sampler: the ``Sampler`` that owns the compiled decoder; default the model's own
            (``Sampler.of(model)``), freed with the model.
    Returns:
        (b * k, n) responses with n <= max_new_tokens, and with ``return_logprobs`` their
        (b * k, n) float32 log-probs.
    """
    draw = Draw(max_new_tokens, temperature, generator, eos_token_id, pad_token_id, greedy)
    sampler = sampler if sampler is not None else Sampler.of(model)
    tokens, logprobs = sampler.sample(model, input_ids, attention_mask, draw, samples_per_prompt, compile_generation)
    return (tokens, logprobs) if return_logprobs else tokens


def _rng_state(generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    if generator is not None:
        return generator.get_state()
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(generator: torch.Generator | None, device: torch.device, state: torch.Tensor) -> None:
    if generator is not None:
        generator.set_state(state)
    elif device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)
