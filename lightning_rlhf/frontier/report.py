"""Turn the sweep's results into ``frontier.json``, ``frontier.csv``, ``frontier.md`` and ``frontier.png``."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from lightning_rlhf.callbacks.samples import markdown_table

COLUMNS = ["method", "seed", "point", "kl", "kl_bound", "kl_empirical", "reward_mean", "reward_ci95_low",
           "reward_ci95_high", "positive_rate", "gold_positive_probability", "gold_positive_rate", "distinct_2",
           "perplexity_under_reference", "mean_length_tokens"]
GOAL_KL = 2.0


def kl_fields(point: dict) -> dict:
    """A point's KL columns: ``kl`` is the x-axis (a trained policy's KL estimated from its
    samples, Best-of-N's estimate from its selected responses); ``kl_bound`` and ``kl_empirical``
    are Best-of-N's bound and tie-aware empirical KL (None for trained policies). A Best-of-N
    point cached before the estimate existed holds the bound as ``kl_to_reference`` (flagged
    ``kl_is_bound``); its ``kl`` is then the bound too."""
    bound = point.get("kl_bound", point["kl_to_reference"] if point.get("kl_is_bound") else None)
    return {"kl": point["kl_to_reference"], "kl_bound": bound, "kl_empirical": point.get("kl_empirical")}


def point_rows(results: list[dict]) -> list[dict]:
    """One flat row per evaluated point; ``point`` is the run's step, or n for Best-of-N."""
    rows = []
    for result in results:
        for p in result["points"]:
            rows.append({
                "method": result["method"], "seed": result.get("seed"), "point": p.get("step", p.get("best_of")),
                **kl_fields(p),
                "reward_mean": p["reward_mean"], "reward_ci95_low": p["reward_ci95"][0],
                "reward_ci95_high": p["reward_ci95"][1], "positive_rate": p.get("positive_rate"),
                "gold_positive_probability": p.get("gold_positive_probability"),
                "gold_positive_rate": p.get("gold_positive_rate"), "distinct_2": p["distinct_2"],
                "perplexity_under_reference": p["perplexity_under_reference"],
                "mean_length_tokens": p["mean_length_tokens"]})
    return rows


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def seed_means(rows: list[dict]) -> list[dict]:
    """Rows averaged over seeds per (method, point), with the seeds' lowest and highest KL and
    reward (the spread drawn as error bars)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["point"])].append(row)
    out = []
    for (method, point), group in groups.items():
        mean = {k: _mean([r[k] for r in group]) for k in COLUMNS[3:]}
        out.append({"method": method, "point": point, "seeds": len(group), **mean,
                    "kl_min": min(r["kl"] for r in group), "kl_max": max(r["kl"] for r in group),
                    "reward_min": min(r["reward_mean"] for r in group),
                    "reward_max": max(r["reward_mean"] for r in group)})
    return out


def best_within(means: list[dict], kl: float = GOAL_KL) -> list[dict]:
    """Per method, its highest mean reward at a mean KL of at most ``kl`` nats."""
    best: dict[str, dict] = {}
    for m in means:
        if m["method"] != "sft" and m["kl"] <= kl and (m["method"] not in best
                                                      or m["reward_mean"] > best[m["method"]]["reward_mean"]):
            best[m["method"]] = m
    return list(best.values())


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(rows: list[dict], means: list[dict], settings: dict, wall_s: float | None) -> str:
    sft = next((m for m in means if m["method"] == "sft"), None)
    d2 = sft["distinct_2"] if sft else None

    def ratio(value):
        return None if d2 in (None, 0) or value is None else value / d2

    table = [{"method": m["method"], "point": m["point"], "seeds": m["seeds"],
              "KL (nats)": _fmt(m["kl"], 2), "KL bound": "" if m["kl_bound"] is None else _fmt(m["kl_bound"], 2),
              "KL seed range": f"{m['kl_min']:.2f}-{m['kl_max']:.2f}",
              "reward": _fmt(m["reward_mean"]), "reward seed range": f"{m['reward_min']:.3f}-{m['reward_max']:.3f}",
              "gold P(pos)": _fmt(m["gold_positive_probability"]), "gold pos. rate": _fmt(m["gold_positive_rate"]),
              "distinct-2 / SFT": _fmt(ratio(m["distinct_2"]), 2)} for m in means]
    per_seed = [{"method": r["method"], "point": r["point"], "seed": "" if r["seed"] is None else r["seed"],
                 "KL": _fmt(r["kl"], 2), "KL bound": "" if r["kl_bound"] is None else _fmt(r["kl_bound"], 2),
                 "reward": _fmt(r["reward_mean"]), "gold pos. rate": _fmt(r["gold_positive_rate"]),
                 "distinct-2": _fmt(r["distinct_2"])} for r in rows]
    goal = [{"method": b["method"], "point": b["point"], "KL": _fmt(b["kl"], 2), "reward": _fmt(b["reward_mean"]),
             "gold pos. rate": _fmt(b["gold_positive_rate"]), "distinct-2 / SFT": _fmt(ratio(b["distinct_2"]), 2)}
            for b in best_within(means)]
    lines = ["# Reward-KL frontier", "",
             f"{settings['num_prompts']} held-out test prompts per point; {settings['max_new_tokens']} new tokens at "
             f"temperature {settings['temperature']}; proxy reward `{settings['reward_model']}`, gold judge "
             f"`{settings['judge']}`; KL is the sequence-level KL(pi || SFT) estimated from the samples, except "
             f"Best-of-N's: Beirami et al.'s (2024) estimate from the SFT probability of each selected response, "
             f"with the bound log n - (n-1)/n beside it (KL bound)." + (f" Sweep wall time {wall_s / 60:.1f} min."
                                                                       if wall_s else ""), "",
             "![frontier](frontier.png)", "", "## Mean over seeds", "", markdown_table(table), "",
             f"## Best reward at KL <= {GOAL_KL:g} nats, per method", "", markdown_table(goal), "",
             "## Every point", "", markdown_table(per_seed), ""]
    return "\n".join(lines)


def plot(means: list[dict], path: Path, has_gold: bool) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'lightning-rlhf[eval]'): no frontier.png")
        return False
    panels = [("reward_mean", "proxy reward (reward model)")]
    if has_gold:
        panels.append(("gold_positive_probability", "gold judge P(positive)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    sft = next((m for m in means if m["method"] == "sft"), None)
    methods = [m for m in dict.fromkeys(x["method"] for x in means) if m != "sft"]
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for method in methods:
            points = sorted((m for m in means if m["method"] == method), key=lambda m: m["point"])
            best_of = points[0]["kl_bound"] is not None
            if sft and not best_of:
                points = [sft, *points]
            xs, ys = [p["kl"] for p in points], [p[key] for p in points]
            if any(y is None for y in ys):
                continue
            xerr = [[p["kl"] - p["kl_min"] for p in points], [p["kl_max"] - p["kl"] for p in points]]
            yerr = None
            if key == "reward_mean":
                yerr = [[p["reward_mean"] - p["reward_min"] for p in points],
                        [p["reward_max"] - p["reward_mean"] for p in points]]
            drawn = ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="x" if best_of else "o", markersize=4,
                                capsize=2, label=f"{method} (KL estimate)" if best_of else method)
            if best_of:  # the same points at the bound the literature plots them at
                ax.plot([p["kl_bound"] for p in points], ys, marker="x", markersize=3, linestyle="--", alpha=0.45,
                        color=drawn.lines[0].get_color(), label=f"{method} at the bound log n - (n-1)/n")
        if sft:
            ax.scatter([0.0], [sft[key]], color="black", zorder=5, label="SFT")
        ax.set(xlabel="KL(policy || SFT), nats per sequence", ylabel=label, title=f"{label} vs KL")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_frontier(results: list[dict], out: str | Path, settings: dict, wall_s: float | None = None) -> dict:
    """Write the four outputs into ``out``; returns the JSON written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = point_rows(results)
    means = seed_means(rows)
    data = {"settings": settings, "wall_s": wall_s, "points": rows, "seed_means": means,
            "best_within_2_nats": best_within(means)}
    (out / "frontier.json").write_text(json.dumps(data, indent=2, default=str))
    with open(out / "frontier.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                          for k, v in r.items()} for r in rows)
    (out / "frontier.md").write_text(markdown(rows, means, settings, wall_s))
    plot(means, out / "frontier.png", any(r["gold_positive_probability"] is not None for r in rows))
    return data
