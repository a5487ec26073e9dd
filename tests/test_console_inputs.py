"""Every console script turns a bad path or option into one ``error:`` line (exit 2, no traceback),
before any model loads or any training starts. In-process calls; test_console_errors.py runs the
installed scripts themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY_GPT2

from lightning_rlhf.cli import cli_main
from lightning_rlhf.evaluation.cli import main as eval_main
from lightning_rlhf.frontier.cli import main as frontier_main
from lightning_rlhf.pipeline import main as pipeline_main
from lightning_rlhf.preference_pairs import main as preferences_main
from lightning_rlhf.tokenizer_training import main as tokenizer_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tokenizer_dir, imdb_dir):
    """A folder of wrong things: a file, an empty folder, non-checkpoints, broken YAML, fake exports,
    and a valid tiny SFT config (``sft.yaml``) to spoil one setting at a time."""
    root = tmp_path_factory.mktemp("bad")
    (root / "afile").write_text("hello")
    (root / "adir").mkdir()
    (root / "ckpts").mkdir()
    (root / "ckpts" / "last.ckpt").write_bytes(b"")
    (root / "text.ckpt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, root / "plain.pt")
    torch.save({"pytorch-lightning_version": "2.6.0", "state_dict": {},
                "hyper_parameters": {"_class_path": "lightning_rlhf.modules.RewardModelModule"}}, root / "reward.ckpt")
    (root / "binary.yaml").write_bytes(bytes(range(256)))
    (root / "broken.yaml").write_text("a: [1, 2\n b: : :\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    for name in ("export", "reward"):  # what the existence checks look at; nothing loads them
        (root / name).mkdir()
        (root / name / "config.json").write_text("{}")
        (root / name / "model.safetensors").write_bytes(b"")
    (root / "logs").mkdir()
    config = {
        "trainer": {"accelerator": "cpu", "max_steps": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "limit_val_batches": 0},
        "model": {"class_path": "lightning_rlhf.modules.SFTModule", "init_args": {
            "model_name_or_path": None, "tokenizer_name_or_path": tokenizer_dir, "export_dir": str(root / "out"),
            "model_config": {**TINY_GPT2, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0,
                             "pad_token_id": 1}}},
        "checkpoint": {"dirpath": str(root / "ckpt")},
        "data": {"data_path": imdb_dir, "tokenizer": tokenizer_dir, "shape": "lm", "block_size": 16, "batch_size": 4,
                 "val_size": 20, "max_train_samples": 20},
    }
    (root / "sft.yaml").write_text(yaml.safe_dump(config))
    (root / "fit.yaml").write_text(yaml.safe_dump({"data": {"shape": "prompts"}}))
    sweep = {"out": str(root / "frontier"), "reference": str(root / "export"), "reward_model": str(root / "reward"),
             "judge": None, "data": imdb_dir, "methods": {"ppo": {"config": "fit.yaml"}}}
    (root / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    for name, change in (("no_method_config", {"methods": {"ppo": {"config": "nope.yaml"}}}),
                         ("methods_list", {"methods": ["ppo"]}), ("seeds_int", {"seeds": 3}),
                         ("args_list", {"methods": {"ppo": {"config": "fit.yaml", "args": [1]}}}),
                         ("reference_file", {"reference": str(root / "afile")}),
                         ("reference_missing", {"reference": str(root / "gone" / "sft")})):
        (root / f"sweep_{name}.yaml").write_text(yaml.safe_dump({**sweep, **change}))
    preset = root / "preset"
    preset.mkdir()
    for name in ("pipeline", "sft", "reward", "ppo", "rloo", "grpo", "dpo"):
        (preset / f"{name}.yaml").write_text((REPO / "configs" / "offline" / f"{name}.yaml").read_text())
    for name, text in (("broken_plan", "stages: [sft\n"), ("list_plan", "- sft\n"),
                       ("unknown_policy", "stages: [sft]\nevaluate: {policies: [sft, ppo]}\n")):
        (root / name).mkdir()
        (root / name / "pipeline.yaml").write_text(text)
        (root / name / "sft.yaml").write_text((REPO / "configs" / "offline" / "sft.yaml").read_text())
    (root / "broken_stage").mkdir()
    (root / "broken_stage" / "pipeline.yaml").write_text("stages: [sft]\n")
    (root / "broken_stage" / "sft.yaml").write_text("model: [\n")
    return root


def assert_one_error_line(main, argv: list[str], words: list[str], capsys, monkeypatch, cwd) -> None:
    monkeypatch.delenv("LIGHTNING_RLHF_DEBUG", raising=False)
    monkeypatch.chdir(cwd)  # nothing a failed command might write lands in the repository
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert done.value.code == 2, err
    assert len(errors) == 1, err
    assert "Traceback" not in err and "Namespace(" not in err, err
    assert all(word in errors[0] for word in words), errors[0]


def _args(text: str, root, **names) -> list[str]:
    return [a.format(root=root, **names) for a in text.split()]


FIT = [  # (arguments after `fit --config {root}/sft.yaml`, words the error line must hold)
    pytest.param("--ckpt_path does/not/exist.ckpt", ["--ckpt_path 'does/not/exist.ckpt' does not exist", "last.ckpt"],
                 id="ckpt-missing"),
    pytest.param("--ckpt_path {root}/ckpts", ["is a folder, not a checkpoint file", "ckpts/last.ckpt"],
                 id="ckpt-folder"),
    pytest.param("--ckpt_path {root}/adir", ["is a folder", "holds no .ckpt file"], id="ckpt-empty-folder"),
    pytest.param("--ckpt_path {root}/text.ckpt", ["is not a Lightning checkpoint"], id="ckpt-text-file"),
    pytest.param("--ckpt_path {root}/plain.pt", ["is not a Lightning checkpoint"], id="ckpt-plain-torch-file"),
    pytest.param("--ckpt_path {root}/reward.ckpt", ["written by RewardModelModule, but the config trains SFTModule"],
                 id="ckpt-of-another-stage"),
    pytest.param("--trainer.default_root_dir {root}/afile", ["--trainer.default_root_dir", "is a file"],
                 id="root-dir-is-a-file"),
    pytest.param("--trainer.logger.class_path lightning.pytorch.loggers.TensorBoardLogger "
                 "--trainer.logger.init_args.save_dir {root}/afile",
                 ["trainer.logger (TensorBoardLogger) save_dir", "is a file"], id="logger-save-dir-is-a-file"),
    pytest.param("--checkpoint.dirpath {root}/afile", ["checkpoint.dirpath", "is a file"],
                 id="checkpoint-dirpath-is-a-file"),
    pytest.param("--checkpoint.dirpath {root}/afile/ckpt", ["lies inside", "which is a file"],
                 id="checkpoint-dirpath-under-a-file"),
    pytest.param("--model.init_args.export_dir {root}/afile", ["model.init_args.export_dir", "is a file"],
                 id="export-dir-is-a-file"),
    pytest.param("--build_tokenizer.out {root}/afile/tok", ["build_tokenizer.out", "which is a file"],
                 id="tokenizer-out-under-a-file"),
    pytest.param("--trainer.callbacks+=no.such.Callback", ["class_path 'no.such.Callback' does not import"],
                 id="callback-does-not-import"),
    pytest.param("--trainer.callbacks+=lightning_rlhf.errors.ConfigError", ["is not a Callback"],
                 id="callback-not-a-callback"),
    pytest.param("--trainer.callbacks+=lightning_rlhf.callbacks.SampleTableLogger "
                 "--trainer.callbacks.init_args.bogus 1",
                 ["trainer.callbacks (SampleTableLogger): option 'bogus' is not accepted"], id="callback-bad-option"),
    pytest.param("--trainer.logger.class_path no.such.Logger", ["class_path 'no.such.Logger' does not import"],
                 id="logger-does-not-import"),
    pytest.param("--config {root}/binary.yaml", ["binary.yaml' is not a text (YAML) file"], id="config-not-text"),
]


@pytest.mark.parametrize(("args", "words"), FIT)
def test_fit_bad_inputs(bad, args, words, capsys, monkeypatch, tmp_path):
    argv = ["fit", "--config", str(bad / "sft.yaml"), *_args(args, bad)]
    assert_one_error_line(cli_main, argv, words, capsys, monkeypatch, tmp_path)
    assert not (bad / "ckpt").exists() and not (bad / "out").exists(), "nothing ran"


TOKENIZER = [
    pytest.param("--data {root}/gone --out {tmp}/tok", ["data path", "does not exist"], id="data-missing"),
    pytest.param("--data {data} --out {root}/afile", ["--out", "is a file"], id="out-is-a-file"),
    pytest.param("--data {data} --out {root}/afile/tok", ["lies inside", "which is a file"], id="out-under-a-file"),
    pytest.param("--data {data} --out {root}/export", ["already exists and is not empty", "another --out"],
                 id="out-holds-files"),
    pytest.param("--data {data} --out {tmp}/tok --vocab-size 100", ["--vocab-size must be at least 258"],
                 id="vocab-too-small"),
    pytest.param("--data {data} --out {tmp}/tok --max-reviews 0", ["--max-reviews: must be at least 1"],
                 id="max-reviews-zero"),
    pytest.param("--out {tmp}/tok", ["required: --data"], id="no-data"),
]


@pytest.mark.parametrize(("args", "words"), TOKENIZER)
def test_tokenizer_bad_inputs(bad, imdb_dir, args, words, capsys, monkeypatch, tmp_path):
    argv = _args(args, bad, data=imdb_dir, tmp=tmp_path)
    assert_one_error_line(tokenizer_main, argv, words, capsys, monkeypatch, tmp_path)
    assert not (tmp_path / "tok").exists()


EVAL_OK = "--reference {root}/export --reward-model {root}/reward --data {data} --out {tmp}/eval"
EVAL = [
    pytest.param("--policy nameless " + EVAL_OK, ["--policy takes NAME=FOLDER, got 'nameless'"], id="policy-no-name"),
    pytest.param("--policy a={root}/gone " + EVAL_OK, ["--policy a", "gone' does not exist"], id="policy-missing"),
    pytest.param("--policy a={root}/afile " + EVAL_OK, ["--policy a", "is a file"], id="policy-is-a-file"),
    pytest.param("--policy a={root}/adir " + EVAL_OK, ["--policy a", "has no config.json"], id="policy-not-an-export"),
    pytest.param("--policy a={root}/export --policy a={root}/export " + EVAL_OK, ["--policy a=... is given twice"],
                 id="policy-name-twice"),
    pytest.param("--policy a={root}/export " + EVAL_OK.replace("{root}/export", "{root}/gone"),
                 ["--reference", "does not exist"], id="reference-missing"),
    pytest.param("--policy a={root}/export " + EVAL_OK.replace("{root}/reward", "{root}/afile"),
                 ["--reward-model", "is a file"], id="reward-model-is-a-file"),
    pytest.param("--policy a={root}/export --judge {root}/gone " + EVAL_OK, ["--judge", "does not exist"],
                 id="judge-missing"),
    pytest.param("--policy a={root}/export " + EVAL_OK.replace("{tmp}/eval", "{root}/afile"), ["--out", "is a file"],
                 id="out-is-a-file"),
    pytest.param("--policy a={root}/export --run-logdir {root}/gone " + EVAL_OK, ["--run-logdir", "is not a folder"],
                 id="run-logdir-missing"),
    pytest.param("--policy a={root}/export --device bogus " + EVAL_OK, ["'bogus' is not a device"], id="device-bogus"),
    pytest.param("--policy a={root}/export --num-prompts 0 " + EVAL_OK, ["--num-prompts: must be at least 1"],
                 id="num-prompts-zero"),
    pytest.param("--policy a={root}/export --temperature 0 " + EVAL_OK, ["--temperature: must be a number above 0"],
                 id="temperature-zero"),
    pytest.param("--policy a={root}/export --reward-fn m:f " + EVAL_OK, ["exactly one of --reward-model"],
                 id="two-rewards"),
]


@pytest.mark.parametrize(("args", "words"), EVAL)
def test_eval_bad_inputs(bad, imdb_dir, args, words, capsys, monkeypatch, tmp_path):
    argv = _args(args, bad, data=imdb_dir, tmp=tmp_path)
    assert_one_error_line(eval_main, argv, words, capsys, monkeypatch, tmp_path)
    assert not (tmp_path / "eval").exists()


PAIRS_OK = "--data {data} --out {tmp}/pairs --num-prompts 4"
PREFERENCES = [
    pytest.param("--policy {root}/gone --reward-model {root}/reward " + PAIRS_OK, ["--policy", "does not exist"],
                 id="policy-missing"),
    pytest.param("--policy {root}/afile --reward-model {root}/reward " + PAIRS_OK, ["--policy", "is a file"],
                 id="policy-is-a-file"),
    pytest.param("--policy {root}/export --reward-model {root}/gone " + PAIRS_OK, ["--reward-model", "does not exist"],
                 id="reward-model-missing"),
    pytest.param("--policy {root}/export --reward-model {root}/adir " + PAIRS_OK, ["--reward-model", "no config.json"],
                 id="reward-model-not-an-export"),
    pytest.param("--policy {root}/export --reward-model {root}/reward --data {data} --out {root}/afile",
                 ["--out", "is a file"], id="out-is-a-file"),
    pytest.param("--policy {root}/export --reward-model {root}/reward --data {data} --out {root}/afile/pairs",
                 ["lies inside", "which is a file"], id="out-under-a-file"),
    pytest.param("--policy {root}/export --reward-model {root}/reward --device cuda:7 " + PAIRS_OK,
                 ["--device", "cuda:7"], id="device-not-here"),
    pytest.param("--policy {root}/export --reward-model {root}/reward --batch-size 0 " + PAIRS_OK,
                 ["--batch-size: must be at least 1"], id="batch-size-zero"),
    pytest.param("--policy {root}/export --reward-model {root}/reward --samples-per-prompt 1 " + PAIRS_OK,
                 ["--samples-per-prompt must be at least 2"], id="one-sample"),
    pytest.param("--policy {root}/export " + PAIRS_OK, ["exactly one of --reward-model"], id="no-reward"),
    pytest.param("--reward-model {root}/reward " + PAIRS_OK, ["required: --policy"], id="no-policy"),
]


@pytest.mark.parametrize(("args", "words"), PREFERENCES)
def test_preferences_bad_inputs(bad, imdb_dir, args, words, capsys, monkeypatch, tmp_path):
    argv = _args(args, bad, data=imdb_dir, tmp=tmp_path)
    assert_one_error_line(preferences_main, argv, words, capsys, monkeypatch, tmp_path)
    assert not (tmp_path / "pairs").exists()


PIPELINE = [
    pytest.param("--configs {root}/gone", ["no preset at", "gone"], id="configs-missing"),
    pytest.param("--configs {root}/afile", ["no preset at"], id="configs-is-a-file"),
    pytest.param("--configs {root}/preset --algo nope", ["--algo nope", "choose from dpo, grpo, ppo, rloo"],
                 id="algo-unknown"),
    pytest.param("--configs {root}/preset --algo sft", ["--algo sft", "is not an RL config"], id="algo-not-rl"),
    pytest.param("--configs {root}/preset --algo ,", ["--algo ',' names no algorithm"], id="algo-empty"),
    pytest.param("--configs {root}/broken_plan", ["pipeline.yaml' is not a readable YAML file"], id="plan-not-yaml"),
    pytest.param("--configs {root}/list_plan", ["holds a list, not a mapping"], id="plan-a-list"),
    pytest.param("--configs {root}/broken_stage", ["sft.yaml' is not a readable YAML file"], id="stage-not-yaml"),
    pytest.param("--configs {root}/unknown_policy", ["evaluate.policies names 'ppo'", "not one of its stages"],
                 id="evaluate-unknown-stage"),
    pytest.param("--configs {root}/preset --data {root}/gone/imdb", ["--data", "does not exist"], id="data-missing"),
    pytest.param("--configs {root}/preset --num-prompts 0", ["--num-prompts: must be at least 1"],
                 id="num-prompts-zero"),
]


@pytest.mark.parametrize(("args", "words"), PIPELINE)
def test_pipeline_bad_inputs(bad, args, words, capsys, monkeypatch, tmp_path):
    assert_one_error_line(pipeline_main, _args(args, bad), words, capsys, monkeypatch, tmp_path)
    assert not (tmp_path / "artifacts").exists()


FRONTIER = [
    pytest.param("--config {root}/gone.yaml", ["do not exist"], id="config-missing"),
    pytest.param("--config {root}/adir", ["is a folder, not a YAML file"], id="config-folder"),
    pytest.param("--config {root}/broken.yaml", ["is not a readable YAML file"], id="config-not-yaml"),
    pytest.param("--config {root}/binary.yaml", ["is not a readable YAML file"], id="config-binary"),
    pytest.param("--config {root}/list.yaml", ["holds a list, not a mapping"], id="config-a-list"),
    pytest.param("--config {root}/sweep_no_method_config.yaml", ["method 'ppo' names", "nope.yaml', which does not"],
                 id="method-config-missing"),
    pytest.param("--config {root}/sweep_methods_list.yaml", ["methods must be a mapping"], id="methods-a-list"),
    pytest.param("--config {root}/sweep_seeds_int.yaml", ["seeds must be a list of whole numbers"], id="seeds-int"),
    pytest.param("--config {root}/sweep_args_list.yaml", ["args: a mapping"], id="method-args-a-list"),
    pytest.param("--config {root}/sweep_reference_file.yaml", ["reference (SFT) export", "is a file"],
                 id="reference-is-a-file"),
    pytest.param("--config {root}/sweep_reference_missing.yaml", ["reference (SFT) export", "does not exist"],
                 id="reference-missing"),
    pytest.param("--config {root}/sweep.yaml --out {root}/afile", ["--out", "is a file"], id="out-is-a-file"),
    pytest.param("--config {root}/sweep.yaml --out {root}/afile/f --report-only", ["lies inside"],
                 id="out-under-a-file"),
]


@pytest.mark.parametrize(("args", "words"), FRONTIER)
def test_frontier_bad_inputs(bad, args, words, capsys, monkeypatch, tmp_path):
    assert_one_error_line(frontier_main, _args(args, bad), words, capsys, monkeypatch, tmp_path)
    assert not (bad / "frontier").exists()


def test_bad_input_fixtures_are_untouched(bad):
    """The checks only read: the file every case points at is still the same file."""
    assert (bad / "afile").read_text() == "hello" and not list(bad.glob("afile.*"))
    assert json.loads((bad / "export" / "config.json").read_text()) == {}
