"""Optional LoRA through ``peft``: the reference is the policy with its adapter disabled."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from lightning_rlhf.errors import ConfigError, InputImportError


def apply_lora(lm: PreTrainedModel, r: int, alpha: int, target_modules: list[str] | None) -> PreTrainedModel:
    """Wrap ``lm`` with trainable LoRA adapters of rank ``r``; the base weights are frozen.

    Because the reference is the same network with ``disable_adapter()``, no second copy of the
    weights exists (TRL's ``ref_model=None`` with PEFT). ``target_modules`` None adapts the
    architecture's attention projections (``lora_target_modules``).
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise InputImportError("lora_r > 0 needs peft: pip install 'lightning-rlhf[lora]'") from err
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=lora_target_modules(lm, target_modules),
                        task_type="CAUSAL_LM")
    return get_peft_model(lm, config)


def lora_target_modules(lm: PreTrainedModel, requested: list[str] | None = None) -> list[str]:
    """The module names LoRA adapts in ``lm``: ``requested``, else peft's default for the model
    type (GPT-2: the fused ``c_attn``; Llama, Qwen2, Mistral: ``q_proj`` and ``v_proj``).

    A name (last component or full path, or peft's ``all-linear``) that matches no linear layer
    of ``lm``, or a model type without a default, is a ``ConfigError`` that lists the model's
    linear layer names to choose from.
    """
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(lm.config, "model_type", None)
    paths = [name for name, module in lm.named_modules() if isinstance(module, (torch.nn.Linear, Conv1D))]
    names = sorted({path.rsplit(".", 1)[-1] for path in paths})
    targets = list(requested) if requested is not None else DEFAULTS.get(model_type)
    if targets is None:
        raise ConfigError(f"lora_target_modules: no default for model type '{model_type}'; name the layers to "
                          f"adapt, e.g. lora_target_modules: [{', '.join(names[:2])}] (its linear layers: "
                          f"{', '.join(names)})")
    missing = [t for t in targets if t != "all-linear" and not any(p == t or p.endswith("." + t) for p in paths)]
    if missing:
        raise ConfigError(f"lora_target_modules: {', '.join(missing)} not among the linear layers of this "
                          f"{model_type} model ({', '.join(names)})")
    return list(targets)


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
