"""Write evaluation results: ``metrics.json``, ``samples.jsonl``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_rlhf.callbacks.samples import markdown_table
from lightning_rlhf.evaluation.evaluate import PolicyResult


def read_scalar_curve(log_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a scalar the run logged: from every TensorBoard event file under ``log_dir``
    and every MLflow file-store run under it (``metrics/<tag>``, lines ``timestamp value step``, as
    ``MLFlowLogger`` writes them). A W&B run keeps its curves in W&B."""
    points: list[tuple[int, float]] = []
    event_files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    if event_files:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for events in event_files:
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            points.extend((e.step, e.value) for e in acc.Scalars(tag))
    for metric in sorted(Path(log_dir).rglob(f"metrics/{tag}")):
        if metric.is_file():
            rows = (line.split() for line in metric.read_text().splitlines() if line.strip())
            points.extend((int(step), float(value)) for _, value, step in rows)
    return sorted(points)


def _plots(results: list[PolicyResult], out: Path, run_log_dir: str | None) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'lightning-rlhf[eval]'): no plots")
        return []
    written = []
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in results:
        lo, hi = r.figures["reward_ci95"]
        mean = r.figures["reward_mean"]
        ax.errorbar(r.figures["kl_to_reference"], mean, yerr=[[mean - lo], [hi - mean]], fmt="o",
                    capsize=4, label=r.name)
    ax.set(xlabel="KL to reference (nats per sequence)", ylabel="mean reward (95% CI)",
           title="Reward vs KL")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reward_vs_kl.png", dpi=120)
    written.append("reward_vs_kl.png")
    plt.close(fig)
    if run_log_dir:
        curves = {t: read_scalar_curve(run_log_dir, t) for t in ("reward/score", "objective/kl")}
        if curves["reward/score"]:
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
            for ax, (tag, points) in zip(axes, curves.items(), strict=True):
                ax.plot([s for s, _ in points], [v for _, v in points])
                ax.set(xlabel="PPO iteration", title=tag)
            fig.tight_layout()
            fig.savefig(out / "reward_curve.png", dpi=120)
            written.append("reward_curve.png")
            plt.close(fig)
    return written


def write_report(results: list[PolicyResult], prompts: list[str], out: str | Path, config: dict,
                 run_log_dir: str | None = None, n_examples: int = 12, title: str = "Evaluation report") -> Path:
    """Write every output into ``out`` and return the path of ``report.md`` (headed ``title``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"config": config, "policies": {r.name: r.figures for r in results}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(out / "samples.jsonl", "w") as f:
        for i, prompt in enumerate(prompts):
            row = {"prompt": prompt}
            for r in results:
                row[r.name] = {"response": r.responses[i], "reward": r.rewards[i]}
            f.write(json.dumps(row) + "\n")
    images = _plots(results, out, run_log_dir)

    names = ["figure"] + [r.name for r in results]
    figure_rows = []
    for key in results[0].figures:
        row = {"figure": key}
        for r in results:
            value = r.figures[key]
            row[r.name] = (f"[{value[0]:.3f}, {value[1]:.3f}]" if isinstance(value, list)
                           else "n/a" if value is None else value)
        figure_rows.append(row)
    sample_rows = []
    for i, prompt in enumerate(prompts[:n_examples]):
        row = {"prompt": prompt}
        for r in results:
            row[r.name] = f"{r.responses[i]} ({r.rewards[i]:+.2f})"
        sample_rows.append(row)
    lines = [f"# {title}", "", f"{len(prompts)} held-out prompts; settings: `{json.dumps(config)}`",
             "", "## Figures", "", markdown_table([{k: row[k] for k in names} for row in figure_rows]),
             "", "## Samples (response and reward)", "", markdown_table(sample_rows), ""]
    lines += [f"![{name}]({name})" for name in images]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
