"""The frontier sweep's settings (a YAML file) and the runs they expand to."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lightning_rlhf.callbacks.snapshots import snapshot_count_problem
from lightning_rlhf.config_files import config_chain, read_mapping
from lightning_rlhf.errors import ConfigError, MissingInputError


@dataclass(frozen=True)
class Run:
    """One training run of the sweep: a ``lightning-rlhf fit`` config, its overrides and a seed."""

    method: str
    config: Path
    args: dict[str, Any]
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-seed{self.seed}"


@dataclass
class FrontierSettings:
    """What ``lightning-rlhf-frontier`` sweeps and how every point is evaluated.

    Attributes:
        out: Folder for runs, points and the report.
        reference: The SFT export: every run starts from it, KL is measured to it, Best-of-N samples it.
        reward_model: The proxy reward the RL methods optimise (and that ranks Best-of-N candidates).
        judge: The gold judge, a classifier no policy trained against; None leaves the gold columns out.
        data: IMDB source of the held-out test prompts (and of the runs' training prompts).
        methods: ``name -> {config: <fit config, relative to the file that lists it>, args: {dotted.key:
            value}}``;
            one entry per method and setting (e.g. ``ppo-kl3: {config: ppo.yaml, args:
            {model.init_args.kl_target: 3}}``).
        seeds: Every method runs once per seed (``seed_everything`` and ``data.seed``).
        snapshots: Policies evaluated along each run, at least 4: quadratically spaced steps
            (``callbacks.snapshots.snapshot_steps``; 8 of 200 steps: 3, 13, 28, 50, 78, 113, 153,
            200), so the first lands in the first 10% of the run and the last is its final policy.
        best_of_n: n values of Best-of-N from the reference, one candidate set per seed.
        num_prompts: Held-out test prompts, the same for every point.
        max_new_tokens, temperature, stop_at_eos: How every point samples its responses.
        eval_seed: Sampling seed of every trained policy's evaluation.
        batch_size: Prompts per generation batch (Best-of-N: candidates per batch).
        compile_generation: Evaluate and draw Best-of-N candidates with the compiled decode step
            (same tokens; compiled once for the whole sweep).
        positive_label: The classifiers' positive label.
        device: Where runs train and points are evaluated (``cpu`` or ``gpu``).
    """

    out: str = "artifacts/offline/frontier"
    reference: str = "artifacts/offline/sft"
    reward_model: str = "artifacts/offline/reward"
    judge: str | None = "artifacts/offline/judge"
    data: str = "../shared/data/imdb"
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [1, 2])
    snapshots: int = 8
    best_of_n: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    num_prompts: int = 256
    max_new_tokens: int = 24
    temperature: float = 0.7
    stop_at_eos: bool = False
    eval_seed: int = 0
    batch_size: int = 256
    compile_generation: bool = False
    positive_label: str = "POSITIVE"
    device: str = "cpu"
    base_dir: Path = Path(".")

    def runs(self) -> list[Run]:
        """Methods x seeds, seed-major: a sweep cut short still has every method at the first seed."""
        return [Run(name, self.base_dir / spec["config"], dict(spec.get("args") or {}), seed)
                for seed in self.seeds for name, spec in self.methods.items()]

    def quick(self) -> FrontierSettings:
        """A smoke-test version: a few prompts, the first seed, four snapshots (the fewest that put
        one in the first 10%), best-of-4, and runs cut to a few optimizer steps (``trainer.max_steps``)."""
        methods = {name: {**spec, "args": {**(spec.get("args") or {}), "trainer.max_steps": 4}}
                   for name, spec in self.methods.items()}
        return replace(self, methods=methods, seeds=self.seeds[:1], snapshots=4, num_prompts=8,
                       best_of_n=[n for n in self.best_of_n if n <= 4] or [1], max_new_tokens=8, batch_size=32)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS = {  # a field's annotation -> (test, what the YAML must hold)
    "int": (_whole, "a whole number"),
    "float": (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string (a path or a name)"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a string (a path or a name) or null"),
    "list[int]": (lambda v: isinstance(v, list) and all(_whole(x) for x in v), "a list of whole numbers, e.g. [1, 2]"),
    "dict[str, dict[str, Any]]": (lambda v: isinstance(v, dict),
                                  "a mapping: name -> {config: <fit YAML>, args: {...}}"),
}


def read_yaml_mapping(path: Path, what: str, start: str = "configs/offline/frontier.yaml") -> dict:
    """A YAML file holding a mapping (or nothing), else an input error naming the file."""
    if not path.is_file():
        raise MissingInputError(f"{what} '{path}' is a folder, not a YAML file; give the .yaml file in it")
    return read_mapping(path, f"{what} '{path}'", f"fix it, or start from {start}")


def load_settings(path: str | Path) -> FrontierSettings:
    """Read a frontier YAML; unknown keys, values of the wrong type and methods without a config are errors.

    A sweep with ``base: frontier.yaml`` (relative to its folder) takes every setting it does not
    set from that file: each top-level setting replaces the base's whole, ``methods`` included.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"frontier settings '{path}' do not exist; start from configs/offline/frontier.yaml")
    chain = config_chain(path, read_yaml_mapping(path, "frontier settings"))
    raw = {key: value for _, own in chain for key, value in own.items()}
    listed_in = next((file for file, own in reversed(chain) if "methods" in own), path)
    known = {f.name for f in fields(FrontierSettings)} - {"base_dir"}
    unknown = sorted(set(raw) - known, key=str)
    if unknown:
        raise ConfigError(f"'{path}': unknown setting(s) {', '.join(map(str, unknown))}; known: "
                          f"{', '.join(sorted(known))}")
    for f in fields(FrontierSettings):
        test, kind = _KINDS.get(str(f.type), (lambda v: True, ""))
        if f.name in raw and not test(raw[f.name]):
            raise ConfigError(f"'{path}': {f.name} must be {kind}, got {raw[f.name]!r}")
    settings = FrontierSettings(**raw, base_dir=listed_in.parent)
    if not settings.methods and not settings.best_of_n:
        raise ConfigError(f"'{path}' has neither methods nor best_of_n: nothing to draw")
    for name, spec in settings.methods.items():
        if not isinstance(spec, dict) or "config" not in spec:
            raise ConfigError(f"'{path}': method '{name}' needs a config (a lightning-rlhf fit YAML)")
        if not isinstance(spec["config"], str) or not isinstance(spec.get("args") or {}, dict):
            raise ConfigError(f"'{path}': method '{name}' needs config: <a fit YAML path> and args: a mapping of "
                              f"dotted.key: value, e.g. {{model.init_args.kl_coef: 0.1}}")
        if not (settings.base_dir / spec["config"]).exists():
            raise MissingInputError(f"'{path}': method '{name}' names '{settings.base_dir / spec['config']}', "
                                    f"which does not exist (paths are relative to the frontier YAML)")
    if not settings.seeds or settings.num_prompts < 1:
        raise ConfigError(f"'{path}': seeds must be non-empty and num_prompts at least 1")
    problem = snapshot_count_problem(settings.snapshots)
    if problem:
        raise ConfigError(f"'{path}': {problem}")
    if settings.max_new_tokens < 1 or settings.batch_size < 1 or not settings.temperature > 0:
        raise ConfigError(f"'{path}': max_new_tokens and batch_size must be at least 1 and temperature above 0")
    if any(n < 1 for n in settings.best_of_n):
        raise ConfigError(f"'{path}': best_of_n values must be at least 1, got {settings.best_of_n}")
    return settings
