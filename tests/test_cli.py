from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import torch
import yaml
from helpers import sft_config
from tb_events import read_events
from transformers import pipeline

from lightning_rlhf.cli import build_cli


def test_fit_logs_exports_and_resumes(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    config = sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    cli = build_cli(["fit", "--config", str(config)])
    assert cli.trainer.global_step == 6
    log_dir = Path(cli.trainer.log_dir)
    assert (log_dir / "config.yaml").exists()
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {"last.ckpt"}
    assert len(list((tmp_path / "ckpt").glob("epoch=*.ckpt"))) == 1  # best by val/loss
    scalars, texts = read_events(log_dir)
    assert {"train/loss", "val/loss", "val/ppl"} <= set(scalars)
    tables = texts["samples/text_summary"]
    assert tables and "| prompt | continuation |" in tables[0] and "the movie" in tables[0]
    assert pipeline("text-generation", model=str(tmp_path / "export"))("a", max_new_tokens=2)

    resumed = build_cli(["fit", "--config", str(config), "--trainer.max_steps", "9",
                         "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")])
    assert resumed.trainer.global_step == 9
    new_scalars, _ = read_events(resumed.trainer.log_dir)
    steps = [s for s, _ in new_scalars["train/loss"]]
    assert min(steps) >= 6, "the resumed run continues from the saved step"
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 9


def test_last_ckpt_is_the_newest_state_when_the_monitored_value_stops_improving(tmp_path, tiny_gpt2,
                                                                                 tokenizer_dir, imdb_dir):
    """Monitoring val/loss with mode max, only the first validation (step 3) is "best". Lightning
    2.6 alone then leaves last.ckpt at step 3 after a 6-step run; ours holds step 6, and
    extending the run from it continues from step 6."""
    config = sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    cli = build_cli(["fit", "--config", str(config), "--checkpoint.mode", "max"])
    assert cli.trainer.global_step == 6
    assert [p.name for p in (tmp_path / "ckpt").glob("epoch=*.ckpt")] == ["epoch=0-step=3.ckpt"]
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 6
    resumed = build_cli(["fit", "--config", str(config), "--checkpoint.mode", "max", "--trainer.max_steps", "8",
                         "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")])
    assert min(s for s, _ in read_events(resumed.trainer.log_dir)[0]["train/loss"]) >= 6
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 8


def test_print_config_lists_the_module(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    config = sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    out = StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        build_cli(["fit", "--config", str(config), "--print_config"])
    printed = yaml.safe_load(out.getvalue())
    assert printed["model"]["class_path"].endswith("SFTModule")
    assert printed["model"]["init_args"]["learning_rate"] == 1e-3
    assert printed["checkpoint"]["save_last"] is True


def test_unknown_config_key_is_rejected(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    from jsonargparse import ArgumentError

    from lightning_rlhf.errors import user_message

    config = sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    with pytest.raises(ArgumentError) as caught:
        build_cli(["fit", "--config", str(config), "--model.init_args.learning_rat", "1"])
    assert user_message(caught.value).startswith("model (SFTModule): option 'learning_rat' is not accepted")


def test_every_shipped_config_parses(capsys):
    """Every stage config under configs/ names only arguments that exist, with valid values."""
    repo = Path(__file__).resolve().parents[1]
    configs = sorted(p for p in (repo / "configs").rglob("*.yaml")
                     if p.name != "pipeline.yaml" and not p.name.startswith("frontier"))
    assert {"offline/rloo.yaml", "offline/grpo.yaml", "gpt2/rloo.yaml"} <= {str(p.relative_to(repo / "configs"))
                                                                          for p in configs}
    for config in configs:
        with pytest.raises(SystemExit) as done:
            build_cli(["fit", "--config", str(config), "--print_config"])
        assert done.value.code in (0, None), config
        printed = capsys.readouterr().out
        assert "class_path: lightning_rlhf.modules." in printed, config


def test_every_shipped_frontier_config_loads():
    """The frontier sweeps name fit configs that exist, and only known settings."""
    from lightning_rlhf.frontier import load_settings

    repo = Path(__file__).resolve().parents[1]
    sweeps = sorted((repo / "configs").rglob("frontier*.yaml"))
    assert len(sweeps) >= 3
    for sweep in sweeps:
        settings = load_settings(sweep)
        assert all(run.config.exists() for run in settings.runs()), sweep



def _printed(*args: str) -> dict:
    out = StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        build_cli(["fit", *args, "--print_config"])
    return yaml.safe_load(out.getvalue())


def test_an_override_file_is_its_base_with_its_settings_on_top(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir):
    """``base:`` (relative to the file; a base may have a base): the base's resolved config with the
    override's values in place, mappings merged key by key, a list replaced whole; the pipeline and
    the frontier read the same settings (``resolve_config``)."""
    from lightning_rlhf.config_files import resolve_config

    base = sft_config(tmp_path, tiny_gpt2, tokenizer_dir, imdb_dir)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "slower.yaml").write_text(
        "base: ../sft.yaml\nmodel:\n  init_args: {learning_rate: 5.0e-4}\n"
        "trainer:\n  logger:\n    init_args: {name: slower}\n")
    top = tmp_path / "more" / "longer.yaml"
    top.write_text("base: slower.yaml  # a chain\ntrainer:\n  max_steps: 9\n  callbacks: []\n")

    expected = _printed("--config", str(base))
    expected["model"]["init_args"]["learning_rate"] = 5.0e-4
    expected["trainer"]["logger"]["init_args"]["name"] = "slower"
    expected["trainer"]["max_steps"] = 9
    expected["trainer"]["callbacks"] = []
    assert _printed("--config", str(top)) == expected
    assert _printed(f"--config={top}") == expected

    read = resolve_config(top, yaml.safe_load(top.read_text()))
    assert "base" not in read and read["model"]["class_path"].endswith("SFTModule")
    assert read["model"]["init_args"]["learning_rate"] == 5.0e-4 and read["model"]["init_args"]["warmup_steps"] == 1
    assert read["trainer"]["max_steps"] == 9 and read["trainer"]["callbacks"] == []
    assert read["trainer"]["logger"]["init_args"] == {"save_dir": str(tmp_path / "logs"), "name": "slower"}


@pytest.mark.parametrize("files, words", [
    ({"a.yaml": "base: missing.yaml\n"}, ["a.yaml' has base: missing.yaml", "missing.yaml' is not a file",
                                          "relative to the folder of"]),
    ({"a.yaml": "base: b.yaml\nseed_everything: 1\n", "b.yaml": "base: a.yaml\n"},
     ["base: keys go round in a circle", "a.yaml' -> '", "b.yaml' -> '", "full config without base:"]),
    ({"a.yaml": "base: a.yaml\n"}, ["go round in a circle"]),
    ({"a.yaml": "base: [sft.yaml]\n"}, ["base: must be the path of the config this file overrides"]),
], ids=["missing", "cycle", "itself", "not_a_path"])
def test_a_missing_base_or_a_circle_is_one_error_line(tmp_path, files, words, capsys, monkeypatch):
    from lightning_rlhf.cli import cli_main

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.delenv("LIGHTNING_RLHF_DEBUG", raising=False)
    with pytest.raises(SystemExit) as done:
        cli_main(["fit", "--config", str(tmp_path / "a.yaml")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert done.value.code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert all(word in errors[0] for word in words), errors[0]


def test_shipped_override_files_are_short_and_resolve_to_a_whole_stage():
    """The RL variants of each preset override its ppo.yaml or dpo.yaml; what the pipeline reads
    of them (module, export folder, data) comes out whole."""
    from lightning_rlhf.pipeline import load_stage

    repo = Path(__file__).resolve().parents[1] / "configs"
    for preset, name, base in [("offline", "grpo", "ppo"), ("offline", "rloo-fixed-beta", "ppo"),
                               ("offline", "bonbon", "dpo"), ("gpt2", "bond", "ppo"), ("gpt2", "bonbon", "dpo")]:
        own = yaml.safe_load((repo / preset / f"{name}.yaml").read_text())
        assert own["base"] == f"{base}.yaml" and "class_path" not in own["model"], name
        stage, full = load_stage(repo / preset / f"{name}.yaml"), load_stage(repo / preset / f"{base}.yaml")
        assert stage["model"]["class_path"] == full["model"]["class_path"]
        assert stage["model"]["init_args"]["export_dir"] == f"artifacts/{preset}/{name}"
        assert stage["data"]["shape"] == full["data"]["shape"] and stage["trainer"]["callbacks"]


def test_frontier_sweeps_on_top_of_the_default_use_its_prompts():
    """frontier-*.yaml take what they do not set from frontier.yaml (``base:``): the same held-out
    prompts and sampling, their own methods and output folder."""
    from lightning_rlhf.frontier import load_settings

    repo = Path(__file__).resolve().parents[1] / "configs" / "offline"
    default = load_settings(repo / "frontier.yaml")
    for name in ("frontier-grpo.yaml", "frontier-dpo-beta.yaml"):
        sweep = load_settings(repo / name)
        same = ("reference", "reward_model", "judge", "data", "num_prompts", "max_new_tokens", "temperature",
                "eval_seed")
        assert all(getattr(sweep, key) == getattr(default, key) for key in same), name
        assert sweep.out != default.out and set(sweep.methods).isdisjoint(default.methods) and sweep.best_of_n == []
        assert all(run.config.parent == repo for run in sweep.runs())
