"""Load tokenizers and Hugging Face models from a hub id, a local folder, or a small config.

Every stage takes a model as ``model_name_or_path`` (hub id or folder) or, for offline work and
tests, as ``model_config`` (a dict of config fields such as ``{"n_layer": 2, "n_embd": 64}``),
which builds a randomly initialised model from a fixed seed so that it can be rebuilt exactly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lightning_rlhf.errors import ConfigError, MissingInputError, UnreachableError, first_line
from lightning_rlhf.export import made_by
from lightning_rlhf.hub import hub_cached, hub_reachable, looks_like_local_path

POSITIVE_ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}


def _missing(kind: str, name: str, reason: str) -> Exception:
    """A missing folder (with the command that makes it), or a hub id that could not be loaded;
    a name that could be either (``org/name``) gets both."""
    maker = made_by(name)
    fix = (f"it is the export of `{maker}`; run that first (or `lightning-rlhf-pipeline` for every stage)"
           if maker else "pass an existing folder written by `save_pretrained`, or a hub id")
    if looks_like_local_path(name):
        return MissingInputError(f"{kind} folder '{name}' does not exist: {fix}")
    return UnreachableError(
        f"{kind} '{name}' is neither a local folder (no such folder under {os.getcwd()}) nor loadable from "
        f"the Hugging Face hub ({reason}); {fix}. Without the hub, use local folders (`--preset offline`)"
    )


def check_model_input(name: str | None, option: str) -> None:
    """Fail at once, naming ``option``, when a local model folder is missing or is a file (hub ids pass)."""
    if name is None:
        return
    path = os.path.expanduser(name)
    if os.path.isfile(path):
        raise MissingInputError(f"{option} '{name}' is a file; give a folder written by `save_pretrained` (a "
                                f"stage's export_dir) or a hub id")
    if not os.path.exists(path) and looks_like_local_path(name):
        maker = made_by(name)
        fix = (f"it is the export of `{maker}`; run that first (or `lightning-rlhf-pipeline` for every stage)"
               if maker else "give an existing folder written by `save_pretrained`, or a hub id")
        raise MissingInputError(f"{option} '{name}' does not exist: {fix}")
    check_export_folder(name, option)


def from_source(kind: str, name: str, load: Callable[..., Any]) -> Any:
    """``load(name_or_path, local_files_only=...)`` for a local folder, a cached or a reachable hub id.

    A path that does not exist and cannot be a hub id fails at once, naming the command that
    makes it; a hub id fails at once when the hub is unreachable and the id is not cached.
    """
    path = os.path.expanduser(name)
    if os.path.exists(path):
        try:
            return load(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise MissingInputError(f"could not load {kind} from '{name}': {first_line(err)}") from err
    if looks_like_local_path(name):
        raise _missing(kind, name, "")
    online, offline_reason = hub_reachable(), "the hub is not reachable from this machine and the id is not cached"
    if not online and not hub_cached(name):
        raise _missing(kind, name, offline_reason)
    try:
        return load(name, local_files_only=not online)
    except (OSError, ValueError) as err:
        raise _missing(kind, name, first_line(err) if online else offline_reason) from err


def check_export_folder(path: str, kind: str) -> None:
    """Name the missing file of a local model folder before transformers fails deep inside."""
    folder = Path(os.path.expanduser(path))
    if not folder.is_dir():
        return
    if not (folder / "config.json").exists():
        raise MissingInputError(
            f"{kind} folder '{path}' has no config.json, so it is not a `save_pretrained` export. "
            f"Re-run the stage that exports it, or point at the right folder."
        )
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    if kind != "tokenizer" and not has_weights:
        raise MissingInputError(
            f"{kind} folder '{path}' has config.json but no weights (*.safetensors or *.bin). "
            f"The export was interrupted or copied partly; export it again."
        )


def load_tokenizer(name_or_path: str, pad_with_eos: bool = True) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure it can pad.

    GPT-2 ships without a pad token. With ``pad_with_eos`` the EOS token pads (attention masks,
    not token ids, decide what is padding everywhere in this package); otherwise a tokenizer
    without a pad token is an error that says how to add one.
    """
    tokenizer = from_source("tokenizer", name_or_path, AutoTokenizer.from_pretrained)
    if tokenizer.pad_token is None:
        if pad_with_eos and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            raise ConfigError(
                f"tokenizer '{name_or_path}' has no pad token"
                + (" and no eos token" if tokenizer.eos_token is None else "")
                + ". Add one and save it (tokenizer.add_special_tokens({'pad_token': '<pad>'}); "
                "tokenizer.save_pretrained(folder)), or set pad_with_eos=True to pad with EOS."
            )
    return tokenizer


def _config_from_dict(config: dict[str, Any], default_type: str) -> Any:
    fields = dict(config)
    model_type = fields.pop("model_type", default_type)
    return AutoConfig.for_model(model_type, **fields)


def build_from_config(
    config: dict[str, Any], kind: str, seed: int = 0, default_type: str = "gpt2"
) -> PreTrainedModel:
    """Randomly initialise a model from config fields with a private, fixed seed.

    The same ``(config, seed)`` always gives the same weights, so a frozen reference built from
    a config can be rebuilt on resume instead of being stored in every checkpoint.
    """
    auto = AutoModelForCausalLM if kind == "causal_lm" else AutoModelForSequenceClassification
    hf_config = _config_from_dict(config, default_type)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return auto.from_config(hf_config)


def check_one_source(name_or_path: str | None, config: dict[str, Any] | None) -> None:
    """Exactly one of a hub id / folder and a config: with both, the config would build a random
    model and the named weights would be ignored without a word."""
    if config is not None and name_or_path is not None:
        raise ConfigError(f"both a model to load ('{name_or_path}') and a model config were given, and the config "
                          f"would build a random model instead; set the *_name_or_path option to null to train "
                          f"from the config, or the *_config option to null to load '{name_or_path}'")
    if config is None and name_or_path is None:
        raise ConfigError("give either model_name_or_path or model_config")


def load_causal_lm(
    name_or_path: str | None, config: dict[str, Any] | None = None, seed: int = 0
) -> PreTrainedModel:
    """Causal LM from a small config (random init) or a hub id / local folder, in fp32.

    fp32 because transformers loads weights in the dtype they are stored in: a bf16 hub
    checkpoint (Qwen2.5, Llama 3) would otherwise train bf16 master weights and AdamW state under
    ``bf16-mixed``, where small updates are rounded away. The Trainer's precision casts from here.
    """
    check_one_source(name_or_path, config)
    if config is not None:
        return build_from_config(config, "causal_lm", seed)
    check_export_folder(name_or_path, "model")
    return from_source("model", name_or_path,
                       lambda source, **kw: AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kw))


def load_sequence_classifier(
    name_or_path: str | None,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    num_labels: int | None = None,
) -> PreTrainedModel:
    """Sequence classifier from a small config (random init) or a hub id / local folder.

    With ``num_labels=2`` the labels are named NEGATIVE/POSITIVE, so exports are self-describing.
    """
    labels: dict[str, Any] = {}
    if num_labels is not None:
        labels = dict(num_labels=num_labels, id2label=POSITIVE_ID2LABEL,
                      label2id={v: k for k, v in POSITIVE_ID2LABEL.items()})
    check_one_source(name_or_path, config)
    if config is not None:
        return build_from_config({**config, **labels}, "classifier", seed, default_type="distilbert")
    check_export_folder(name_or_path, "model")
    return from_source("model", name_or_path,
                       lambda source, **kw: AutoModelForSequenceClassification.from_pretrained(
                           source, **labels, dtype=torch.float32, **kw))  # fp32 masters, as load_causal_lm


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0: log-probs and KL must not be noisy (TRL, N-details P4)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
