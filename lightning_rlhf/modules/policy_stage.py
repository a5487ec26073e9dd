"""``PolicyStage``: what the policy-optimisation modules (PPO and its siblings, DPO) share.

A trained policy, a frozen reference that checkpoints leave out (it is reloaded from its source),
the context-length check and the export of the policy as a plain causal LM at the end of fit.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
from transformers import PreTrainedModel

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.export import export_at_fit_end, model_context
from lightning_rlhf.models.lora import is_lora
from lightning_rlhf.sharding import export_model, is_sharded, shard_lightning_module


class PolicyStage(L.LightningModule):
    """Base of the modules that fine-tune a causal LM against a frozen reference.

    Subclasses set ``self.tokenizer`` and return their causal LM from ``trained_lm``; the state
    dict keys under ``frozen_prefixes`` (the reference, a reward model) are not checkpointed.
    """

    frozen_prefixes: tuple[str, ...] = ("ref_model.",)
    unsharded_children: tuple[str, ...] = ("reward",)  # a frozen reward model stays whole on each rank

    def trained_lm(self) -> PreTrainedModel:
        """The causal LM being trained (without a value head)."""
        raise NotImplementedError

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().state_dict(*args, **kwargs)
        return {k: v for k, v in state.items() if not k.startswith(self.frozen_prefixes)}

    def require_context(self, positions: int | None, what: str, fix: str) -> None:
        """Refuse data whose rows need more ``positions`` than the policy has; ``what`` names
        them and ``fix`` (which may use ``{context}``) says what to change."""
        context = model_context(self.trained_lm())
        if context and positions and positions > context:
            raise ConfigError(f"{what} exceeds the policy's context of {context} positions; "
                              + fix.format(context=context))

    def exportable_policy(self) -> PreTrainedModel:
        """The policy as a plain causal LM (LoRA merged into a copy)."""
        lm = self.trained_lm()
        return copy.deepcopy(lm).merge_and_unload() if is_lora(lm) else lm

    def configure_model(self) -> None:
        """Under ``--trainer.strategy fsdp2``: FSDP2 per block on the policy and the reference (``sharding``)."""
        shard_lightning_module(self, skip=self.unsharded_children)

    def on_fit_end(self) -> None:
        if is_sharded(self.trained_lm()):  # every rank gathers; rank 0 exports the full copy
            lm = export_model(self.trained_lm())
        else:
            lm = self.exportable_policy() if self.trainer.is_global_zero else self.trained_lm()
        export_at_fit_end(self.trainer, self.hparams.export_dir, lm, self.tokenizer, "the policy and tokenizer")
