"""Config files that override another one: a top-level ``base:`` key.

``configs/offline/grpo.yaml`` holds ``base: ppo.yaml`` (a path relative to the file's own folder) and
only what GRPO changes. ``lightning-rlhf fit --config configs/offline/grpo.yaml`` then runs as
``--config configs/offline/ppo.yaml --config <grpo.yaml without base:>``: jsonargparse applies the
configs in order, each value replacing the one before key by key (a mapping such as
``model.init_args`` is merged, a list such as ``trainer.callbacks`` is replaced whole). A base may
have a base of its own. ``lightning_rlhf.cli`` expands every ``--config`` this way before parsing;
the pipeline and the frontier run stages through it, and read a stage's settings (module, export
folder, data shape) with ``resolve_config``, which merges the same files the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from lightning_rlhf.errors import ConfigError, MissingInputError, first_line

BASE_KEY = "base"
_CONFIG_FLAGS = ("--config", "-c")


def read_mapping(path: Path, name: str, hint: str) -> dict:
    """The settings in the YAML file at ``path`` ({} for an empty one), for every config this
    package reads itself (a ``base:``, a pipeline preset's files).

    Args:
        path: The file.
        name: How the error message calls it, e.g. ``"'configs/offline/ppo.yaml' (the base: of ...)"``.
        hint: How to fix it, the end of the error message.

    Raises:
        ConfigError: the file is unreadable, not YAML, or holds something other than a mapping.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{name} is not a readable YAML file ({first_line(err)}); {hint}") from err
    if not isinstance(data, dict | None):
        raise ConfigError(f"{name} holds a {type(data).__name__}, not a mapping of settings; {hint}")
    return data or {}


def _read_base(path: Path, child: Path) -> dict:
    return read_mapping(path, f"'{path}' (the base: of '{child}')",
                        "fix it, or point base: at a full config such as configs/offline/ppo.yaml")


def _base_path(path: Path, settings: dict) -> Path | None:
    if BASE_KEY not in settings:
        return None
    base = settings[BASE_KEY]
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"'{path}': base: must be the path of the config this file overrides, relative to its "
                          f"folder (e.g. base: ppo.yaml), not {base!r}")
    return path.parent / Path(base).expanduser()


def config_chain(path: str | os.PathLike, settings: dict) -> list[tuple[Path, dict]]:
    """The files a config stands for, its first base first and ``path`` last, each with its
    settings less ``base:``; ``settings`` is ``path``'s own (already read). A single item when
    ``path`` has no ``base:``.

    Raises:
        MissingInputError: a ``base:`` names a file that does not exist.
        ConfigError: the ``base:`` keys go round in a circle, or a base is not a YAML mapping.
    """
    path = Path(path)
    chain: list[tuple[Path, dict]] = []
    while True:
        chain.append((path, {k: v for k, v in settings.items() if k != BASE_KEY}))
        base = _base_path(path, settings)
        if base is None:
            return chain[::-1]
        if any(os.path.realpath(base) == os.path.realpath(p) for p, _ in chain):
            circle = " -> ".join(f"'{p}'" for p, _ in chain) + f" -> '{base}'"
            raise ConfigError(f"the base: keys go round in a circle ({circle}); the first config of a chain must be "
                              f"a full config without base:")
        if not base.is_file():
            raise MissingInputError(f"'{path}' has base: {settings[BASE_KEY]}, but '{base}' is not a file; base: is "
                                    f"the path of the config it overrides, relative to the folder of '{path}'")
        settings = _read_base(base, path)
        path = base


def merge_settings(base: dict, override: dict) -> dict:
    """``override`` on top of ``base`` as jsonargparse applies a second ``--config``: mappings
    merge key by key, anything else (a value, a list) replaces the base's."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        merged[key] = merge_settings(below, value) if isinstance(value, dict) and isinstance(below, dict) else value
    return merged


def resolve_config(path: str | os.PathLike, settings: dict) -> dict:
    """The settings of the config at ``path`` (its own, already read, in ``settings``) with its
    bases under them: what ``lightning-rlhf fit --config path`` parses, before the defaults."""
    merged: dict = {}
    for _, own in config_chain(path, settings):
        merged = merge_settings(merged, own)
    return merged


def _expand_one(value: str) -> list[str] | None:
    """``--config`` arguments for the chain of a config file with ``base:``; None for anything
    else (a file without ``base:``, a YAML string, or a path jsonargparse will report)."""
    path = Path(value)
    try:
        settings = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # jsonargparse says what is wrong with it, as for any config
    if not isinstance(settings, dict) or BASE_KEY not in settings:
        return None
    (first, _), *rest = config_chain(path, settings)
    args = ["--config", str(first)]
    for _, own in rest:  # the file less its base: key, as a YAML string (jsonargparse takes either)
        args += ["--config", yaml.safe_dump(own, sort_keys=False)] if own else []
    return args


def expand_config_args(args: list[str]) -> list[str]:
    """``args`` with every ``--config FILE`` (``-c FILE``, ``--config=FILE``) whose file has
    ``base:`` replaced by one ``--config`` per file of its chain, first base first; the other
    arguments as they are."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = str(args[i])
        pair = arg in _CONFIG_FLAGS and i + 1 < len(args)
        value = str(args[i + 1]) if pair else arg.split("=", 1)[1] if arg.startswith("--config=") else None
        expanded = _expand_one(value) if value is not None else None
        taken = 2 if pair else 1
        out += expanded or [str(a) for a in args[i:i + taken]]
        i += taken
    return out
