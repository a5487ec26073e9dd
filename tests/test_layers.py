"""Layers point one way: ``rl/`` (the math) <- ``generation/``, ``models/`` <- ``engine/`` <- ``modules/`` <- CLIs.

Each check imports a layer in a fresh interpreter and lists what came with it, so an import
added anywhere below the layer (a module-level one or one in a package ``__init__``) fails here.
"""

import json
import subprocess
import sys

import pytest

import lightning_rlhf

ROOT = lightning_rlhf.__path__[0]

IMPORTED = """
import importlib, json, pkgutil, sys
import lightning_rlhf.{layer} as layer
for info in pkgutil.iter_modules(layer.__path__):
    importlib.import_module("lightning_rlhf.{layer}." + info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _imported_with(layer: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", IMPORTED.format(layer=layer)], capture_output=True, text=True,
                         check=True, cwd=ROOT + "/..")
    return json.loads(out.stdout.splitlines()[-1])


def _offenders(modules: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden)]


def test_rl_imports_torch_and_nothing_of_lightning_models_or_generation():
    forbidden = ("lightning", "pytorch_lightning", "transformers", "lightning_rlhf.models",
                 "lightning_rlhf.generation", "lightning_rlhf.modules", "lightning_rlhf.data")
    assert _offenders(_imported_with("rl"), forbidden) == []


@pytest.mark.parametrize("layer", ["generation", "models", "engine"])
def test_generation_models_and_engine_do_not_import_the_modules_above_them(layer):
    forbidden = ("lightning_rlhf.modules", "lightning_rlhf.cli", "lightning_rlhf.frontier", "lightning_rlhf.pipeline")
    assert _offenders(_imported_with(layer), forbidden) == []
