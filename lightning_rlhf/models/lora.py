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


def policy_and_reference(
    policy_name_or_path: str | None,
    policy_config: dict | None,
    ref_name_or_path: str | None,
    init_seed: int,
    lora_r: int = 0,
    lora_alpha: int = 16,
    lora_target_modules: list[str] | None = None,
    gradient_checkpointing: bool = False,
) -> tuple[PreTrainedModel, PreTrainedModel | None]:
    """The trainable policy and its frozen reference, as every policy-optimisation stage needs.

    With ``lora_r > 0`` the policy gets LoRA adapters and the reference is None: the policy with
    its adapter disabled serves as the reference, without a second copy of the weights. Otherwise
    the reference is a separate copy (of ``ref_name_or_path``, default the policy's source),
    frozen, in eval mode, without dropout.
    """
    from lightning_rlhf.models.loading import disable_dropout, load_causal_lm

    policy = load_causal_lm(policy_name_or_path, policy_config, init_seed)
    if gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    if lora_r > 0:
        return apply_lora(policy, lora_r, lora_alpha, lora_target_modules), None
    ref = load_causal_lm(ref_name_or_path or policy_name_or_path, policy_config, init_seed)
    ref.requires_grad_(False).eval()
    disable_dropout(ref)
    return policy, ref
