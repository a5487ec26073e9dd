"""Sharded training: FSDP2 (``fully_shard``) through Lightning's ``ModelParallelStrategy``.

Lightning's ``FSDPStrategy`` (FSDP1) wraps the LightningModule and breaks manual optimization
(Lightning #19626, #19685); ``ModelParallelStrategy`` never wraps it and leaves the sharding to
``configure_model``, which calls ``shard_lightning_module`` here. ``FSDP2Strategy`` (short name
``fsdp2``) is that strategy with every process in the data-parallel dimension and no tensor
parallelism: FSDP2 across all ranks, like DDP but with parameters, gradients and optimizer state
split between them.

How a Hugging Face model is cut (``shard_model``): one FSDP unit per transformer block (its
weights are gathered just before the block runs and freed after), and one root unit that groups
the trunk (``base_model``: embeddings, final norm) with what sits beside it (the LM head, a
classifier head). The root unit is never freed after its forward (``reshard_after_forward=False``):
the log-prob path reads the LM head's weight directly (``models.forward.head_fp32``, fp32) after
the trunk's forward, outside any hook; FSDP frees it after the backward. Under ``bf16-mixed`` the
blocks compute with bf16 weights (``MixedPrecisionPolicy``, fp32 gradient reduction); the root
unit keeps fp32, so logits and log-probs stay fp32.

Generating from FSDP2 units gathers every block's weights again at each decoded token;
``gathered`` gathers them once for a whole rollout and frees them after.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.load import _METADATA_FILENAME
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy, StrategyRegistry
from torch.distributed.constants import default_pg_timeout
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from lightning_rlhf.errors import ConfigError

FSDP2 = "fsdp2"
FSDP1_NAMES = ("fsdp", "fsdp_cpu_offload")  # Lightning's FSDPStrategy short names
USE_FSDP2 = (f"use --trainer.strategy {FSDP2} (FSDP2 through Lightning's ModelParallelStrategy, which every "
             f"lightning-rlhf stage shards in configure_model)")


class FSDP2Strategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` as plain FSDP2: ``data_parallel_size`` defaults to every process
    (Lightning's default is the number of nodes) and ``tensor_parallel_size`` to 1, the only
    value ``configure_model`` accepts. The checkpoint is a folder of per-rank shards
    (distributed checkpoint) unless ``save_distributed_checkpoint`` is False.
    """

    def __init__(self, data_parallel_size: Literal["auto"] | int = "auto", tensor_parallel_size: int = 1,
                 save_distributed_checkpoint: bool = True, process_group_backend: str | None = None,
                 timeout: timedelta | None = default_pg_timeout) -> None:
        super().__init__(data_parallel_size, tensor_parallel_size, save_distributed_checkpoint,
                         process_group_backend, timeout)

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


# FSDP2 warns when a unit returns a view, since an in-place op on it would drop the hook that
# gathers the unit's weights for the backward; our root units are never freed after their forward
# and the blocks' outputs are not views, so the warning (twice per run and rank) says nothing here.
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDP(PolicyWithValueHead|\w+Model)")

if FSDP2 not in StrategyRegistry:
    StrategyRegistry.register(FSDP2, FSDP2Strategy, description="FSDP2 over all processes (lightning-rlhf)")


def is_sharded(model: torch.nn.Module | None) -> bool:
    """Whether ``fully_shard`` has been applied to ``model`` or one of its submodules."""
    return model is not None and any(isinstance(m, FSDPModule) for m in model.modules())


def is_sharded_checkpoint(path: Any) -> bool:
    """Whether ``path`` is the folder a distributed-checkpoint save writes (per-rank shards + meta)."""
    folder = Path(path)
    return folder.is_dir() and (folder / _METADATA_FILENAME).is_file()


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a Hugging Face model: the modules whose class the model names in
    ``_no_split_modules`` (the outermost ones), else the longest ``ModuleList`` (DistilBERT's
    ``transformer.layer``); empty for a model without either."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(inner, "_no_split_modules", None) or ())
    found = [m for m in model.modules() if type(m).__name__ in names]
    if not found:
        lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
        found = list(max(lists, key=len)) if lists else []
    inside = {id(sub) for block in found for sub in block.modules() if sub is not block}
    return [b for b in found if id(b) not in inside]


def _unassigned(module: torch.nn.Module) -> bool:
    """Whether ``module`` has parameters not yet in an FSDP unit."""
    return any(not isinstance(p, torch.distributed.tensor.DTensor) for p in module.parameters())


def shard_model(model: torch.nn.Module, mesh: DeviceMesh, mp_policy: MixedPrecisionPolicy | None = None
                ) -> torch.nn.Module:
    """``fully_shard`` per transformer block (with ``mp_policy``), then one root unit of the
    trunk and its sibling heads (fp32, kept gathered after its forward); in place.

    The model's own top module is not made an FSDP module: our forwards call ``base_model`` and
    the head's weight directly (``models.forward``), so its forward hook would never run.
    """
    if is_sharded(model):
        return model
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, reshard_after_forward=True, mp_policy=mp_policy or MixedPrecisionPolicy())
        block._rlhf_block = True
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    trunk = getattr(inner, "base_model", inner)
    group = [trunk] + [c for c in inner.children() if c is not trunk and _unassigned(c)]
    group = [m for m in group if _unassigned(m)]
    if group:
        fully_shard(group if len(group) > 1 else group[0], mesh=mesh, reshard_after_forward=False)
    return model


def shard_tree(module: torch.nn.Module, mesh: DeviceMesh, mp_policy: MixedPrecisionPolicy | None = None) -> None:
    """Shard every Hugging Face model inside ``module`` (``shard_model``), then make ``module``
    the FSDP root: its unit holds what is left (a value head), and it is initialised as the root
    at once, because the first forward may be one of an inner model (a rollout samples from
    ``policy.lm``) and FSDP2 takes the first module to run forward as the root. In place."""
    if is_sharded(module):
        return
    _shard_models(module, mesh, mp_policy)
    fully_shard(module, mesh=mesh, reshard_after_forward=False)
    module._get_fsdp_state()._lazy_init()  # torch has no public call for it (2.13)


def _shard_models(module: torch.nn.Module, mesh: DeviceMesh, mp_policy: MixedPrecisionPolicy | None) -> None:
    if hasattr(module, "base_model") and hasattr(module, "config"):
        shard_model(module, mesh, mp_policy)
        return
    for child in module.children():
        _shard_models(child, mesh, mp_policy)


def mixed_precision(precision: Any) -> MixedPrecisionPolicy | None:
    """The blocks' ``MixedPrecisionPolicy`` for the Trainer's precision: bf16 weights in the
    blocks with fp32 gradient reduction for ``bf16-mixed``; None (fp32) otherwise."""
    if str(precision) in ("bf16-mixed", "bf16"):
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return None


def check_strategy(trainer: L.Trainer) -> None:
    """Refuse FSDP1, whose module wrapping our stages do not use (and which breaks manual
    optimization); tensor parallelism, which ``configure_model`` does not apply."""
    strategy = trainer.strategy
    if isinstance(strategy, FSDPStrategy):
        raise ConfigError(f"the Trainer's FSDPStrategy (FSDP1) cannot shard lightning-rlhf stages; {USE_FSDP2}")
    if isinstance(strategy, ModelParallelStrategy):
        mesh = strategy.device_mesh
        if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
            raise ConfigError(f"tensor_parallel_size {mesh['tensor_parallel'].size()} is not supported: "
                              f"lightning-rlhf shards with FSDP2 only; set tensor_parallel_size: 1 and "
                              f"data_parallel_size to the number of processes, or {USE_FSDP2}")


def shard_lightning_module(module: L.LightningModule, skip: tuple[str, ...] = ()) -> bool:
    """``configure_model`` of every stage: under a ``ModelParallelStrategy``, shard each child
    model of ``module`` (``shard_tree``, on the data-parallel mesh, with the Trainer's mixed
    precision), except the children named in ``skip`` (a frozen reward model stays whole on each
    rank). Returns whether it sharded; without that strategy it does nothing (DDP, one device)."""
    trainer = module._trainer
    if trainer is None:
        return False
    check_strategy(trainer)
    if not isinstance(trainer.strategy, ModelParallelStrategy):
        return False
    mesh = trainer.strategy.device_mesh
    dp = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
    mp = mixed_precision(trainer.precision)
    for name, child in module.named_children():
        if name in skip or not any(True for _ in child.parameters()):
            continue
        if any(hasattr(m, "peft_config") for m in child.modules()):
            raise ConfigError(f"LoRA (lora_r > 0) cannot be sharded yet; with --trainer.strategy {FSDP2} set "
                              f"lora_r: 0, or train LoRA with ddp (it fits one GPU per process)")
        shard_tree(child, dp, mp)
    return True


def _fsdp_modules(models: tuple[torch.nn.Module | None, ...]) -> list[tuple[FSDPModule, bool]]:
    """Each distinct FSDP module of ``models`` and whether its model trains (has trainable parameters)."""
    seen, out = set(), []
    for model in models:
        if model is None:
            continue
        trains = any(p.requires_grad for p in model.parameters())
        for m in model.modules():
            if isinstance(m, FSDPModule) and id(m) not in seen:
                seen.add(id(m))
                out.append((m, trains))
    return out


@contextmanager
def gathered(*models: torch.nn.Module | None) -> Iterator[None]:
    """Gather the sharded weights of ``models`` once for the whole block (a rollout), instead of
    once per block per forward (per decoded token), and free them after; a no-op for unsharded
    models (DDP, one device).

    On exit the blocks are freed; a trained model's root unit (trunk + heads) stays gathered
    until its backward frees it, because a forward kept for the first update (the fused
    rollout forward) still reads the head weight; a frozen model's root unit is freed.
    Cost: every rank holds the full weights of ``models`` inside the block.
    """
    units = _fsdp_modules(models)
    if not units:
        yield
        return
    blocks = [m for m, _ in units if getattr(m, "_rlhf_block", False)]
    for m in blocks:
        m.set_reshard_after_forward(False, recurse=False)
    for m, _ in units:
        m.unshard()
    try:
        yield
    finally:
        for m in blocks:
            m.set_reshard_after_forward(True, recurse=False)
        for m, trains in units:
            if getattr(m, "_rlhf_block", False) or not trains:
                m.reshard()


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of ``model`` on CPU, on rank 0 (empty elsewhere); a
    collective every rank must call."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def unsharded_copy(model: torch.nn.Module) -> torch.nn.Module | None:
    """A plain (unsharded, CPU, fp32) copy of a sharded Hugging Face model on rank 0, for
    ``save_pretrained``; None on the other ranks. A collective every rank must call."""
    state = full_state_dict(model)
    if torch.distributed.get_rank() != 0:
        return None
    with torch.device("meta"):
        copy = type(model)(model.config)
    missing, unexpected = copy.load_state_dict(state, strict=False, assign=True)
    copy.tie_weights()
    left = [k for k in missing if k in dict(copy.named_parameters()) and copy.get_parameter(k).is_meta]
    if left or unexpected:
        raise RuntimeError(f"gathered state dict does not fit {type(model).__name__}: missing {left[:3]}, "
                           f"unexpected {unexpected[:3]}")
    for name, buffer in model.named_buffers():  # non-persistent buffers (rotary tables) are not in the state
        if name not in state and copy.get_buffer(name).is_meta:
            _set_buffer(copy, name, buffer.detach().cpu().clone())
    return copy.eval()


def _set_buffer(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, leaf = name.rpartition(".")
    (model.get_submodule(owner) if owner else model)._buffers[leaf] = value


def export_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """What ``export_at_fit_end`` should save: ``model`` itself when unsharded; a gathered copy on
    rank 0 (None on the others) when sharded. A collective under FSDP2."""
    if not is_sharded(model):
        return model
    return unsharded_copy(model)
