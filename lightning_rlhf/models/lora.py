"""Optional LoRA through ``peft``: the reference is the policy with its adapter disabled."""

from __future__ import annotations

from transformers import PreTrainedModel

from lightning_rlhf.errors import InputImportError


def apply_lora(lm: PreTrainedModel, r: int, alpha: int, target_modules: list[str] | None) -> PreTrainedModel:
    """Wrap ``lm`` with trainable LoRA adapters of rank ``r``; the base weights are frozen.

    Because the reference is the same network with ``disable_adapter()``, no second copy of the
    weights exists (TRL's ``ref_model=None`` with PEFT).
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise InputImportError("lora_r > 0 needs peft: pip install 'lightning-rlhf[lora]'") from err
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=target_modules,
                        task_type="CAUSAL_LM")
    return get_peft_model(lm, config)


def is_lora(lm: object) -> bool:
    return hasattr(lm, "disable_adapter") and hasattr(lm, "get_base_model")
