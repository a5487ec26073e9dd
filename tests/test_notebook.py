"""The walkthrough notebook executes on tiny artifacts, so it cannot rot."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lightning_rlhf.evaluation.cli import main as eval_main

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.get("outputs") and not c.get("execution_count") for c in code)


def test_walkthrough_executes(tmp_path, tiny_policy_dirs, imdb_dir, tiny_classifier_dir, monkeypatch):
    pytest.importorskip("ipykernel")
    out = tmp_path / "eval"
    eval_main(["--policy", f"before={tiny_policy_dirs['before']}",
               "--policy", f"after={tiny_policy_dirs['after']}", "--reference", tiny_policy_dirs["before"],
               "--reward-model", tiny_classifier_dir({0: "NEGATIVE", 1: "POSITIVE"}), "--data", imdb_dir,
               "--num-prompts", "8", "--max-new-tokens", "4", "--out", str(out)])
    monkeypatch.setenv("LRLHF_EVAL_DIR", str(out))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "PROMPT:" in text and "before" in text and "after" in text
    assert "image/png" in text
