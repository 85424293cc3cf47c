"""The study's two pictures: KD gain against the Teacher/Student capacity ratio, and accuracy by plan row."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _error(stats: dict) -> float:
    return stats["mean"] - stats["ci95"][0] if stats.get("n", 0) > 1 else 0.0


def plot_gap_curve(path: Path, summary: dict) -> None:
    """Direct KD's paired gain over `none` (mean, 95% interval) at each Teacher's capacity ratio; bottom-up and
    top-down at the largest Teacher's."""
    points = summary["gap_curve"]
    figure, axes = plt.subplots(figsize=(6, 4))
    if points:
        ratios = [point["capacity_ratio"] for point in points]
        axes.errorbar(ratios, [point["gain_vs_none"]["mean"] for point in points],
                      yerr=[_error(point["gain_vs_none"]) for point in points], marker="o", capsize=4,
                      label="direct KD")
        for point in points:
            axes.annotate(point["teacher"], (point["capacity_ratio"], point["gain_vs_none"]["mean"]),
                          textcoords="offset points", xytext=(6, 6), fontsize=8)
        for marker, plan in (("s", "bottom-up"), ("^", "top-down")):
            row = next((row for row in summary["rows"] if row["variant"] == "chain" and row["plan"] == plan), None)
            if row and "vs_none" in row:
                axes.errorbar([ratios[-1]], [row["vs_none"]["mean"]], yerr=[_error(row["vs_none"])], marker=marker,
                              linestyle="none", capsize=4, label=plan)
        axes.set_xscale("log")
        axes.set_xticks(ratios, [f"{ratio:.1f}x" for ratio in ratios])
        axes.minorticks_off()
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.set_xlabel("Teacher / Student LLM parameters")
    axes.set_ylabel("test accuracy gain over none (points)")
    axes.set_title(f"KD gain by capacity gap ({len(summary['seeds'])} paired seeds, 95% interval)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_plans(path: Path, summary: dict, metric: str | None = None, label: str = "test accuracy (%)") -> None:
    """Each row's mean test accuracy (or another of its `metrics`) with its 95% interval and the seeds' values."""
    rows = [row for row in summary["rows"] if metric is None or metric in row.get("metrics", {})]
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.5))
    for index, row in enumerate(rows):
        stats = row if metric is None else row["metrics"][metric]
        per_seed = row["accuracy_per_seed"] if metric is None else stats["per_seed"]
        axes.errorbar([stats["mean"]], [index], xerr=[_error(stats)], marker="o", capsize=4, color="C0")
        axes.scatter(list(per_seed.values()), [index] * len(per_seed), color="C1", s=10, zorder=3)
    axes.set_yticks(range(len(rows)), [f"{row['label']} ({row['student_steps']} steps)" for row in rows], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(f"{label}: mean, 95% interval, seeds")
    axes.set_title("The Student by plan")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
