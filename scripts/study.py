"""Mean ± std of each plan's Student over cascade runs (seeds), by largest Teacher, as a table and a plot.

    python scripts/study.py runs/study/seed-* runs/study-gap-small/seed-* --out docs/study

Reads each run's `cascade.json` (written by `llava-ckd cascade`). Runs whose chains end in different
Teachers give the capacity-gap axis: a row is (largest Teacher of the chain, plan). Prints a markdown
table of test accuracy (overall and per question type, mean ± sample std over runs) and writes it to
OUT.md with a bar plot OUT.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLAN_ORDER = ("none", "direct", "top-down", "bottom-up")
Row = tuple[str, int, str]  # largest Teacher, its parameters, plan


def plan_scores(runs: list[Path]) -> dict[Row, dict[str, list[float]]]:
    """(largest Teacher, its parameters, plan) -> metric ('overall' or a category) -> one value per run."""
    scores: dict[Row, dict[str, list[float]]] = {}
    for run in runs:
        summary = json.loads((run / "cascade.json").read_text())
        largest = summary["chain"][-1]
        for plan, entry in summary["plans"].items():
            metrics = scores.setdefault((largest["name"], largest["capacity"], plan), {})
            metrics.setdefault("overall", []).append(entry["result"]["accuracy"])
            for category, value in entry["result"]["categories"].items():
                metrics.setdefault(category, []).append(value)
    return dict(sorted(scores.items(), key=lambda item: (item[0][1], PLAN_ORDER.index(item[0][2]))))


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def label(row: Row) -> str:
    teacher, parameters, plan = row
    return f"{plan} (≤ {teacher}, {parameters / 1e6:.2f}M)"


def table(scores: dict[Row, dict[str, list[float]]]) -> str:
    metrics = list(next(iter(scores.values())))
    lines = ["| largest Teacher | plan | runs | " + " | ".join(metrics) + " |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in metrics) + " |"]
    for (teacher, parameters, plan), values in scores.items():
        cells = [f"{m:.1f} ± {s:.1f}" for m, s in (mean_std(values[metric]) for metric in metrics)]
        lines.append(f"| {teacher} ({parameters:,}) | {plan} | {len(values['overall'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(scores: dict[Row, dict[str, list[float]]], path: Path) -> None:
    metrics = list(next(iter(scores.values())))
    width = 0.8 / len(scores)
    figure, axes = plt.subplots(figsize=(11, 4.5))
    for index, (row, values) in enumerate(scores.items()):
        stats = [mean_std(values[metric]) for metric in metrics]
        axes.bar([m + index * width for m in range(len(metrics))], [s[0] for s in stats], width,
                 yerr=[s[1] for s in stats], capsize=2, label=label(row))
    axes.set_xticks([m + width * (len(scores) - 1) / 2 for m in range(len(metrics))], metrics)
    axes.set_ylabel("Student test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.legend(ncols=2, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="cascade output folders (one per seed and chain)")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.png")
    args = parser.parse_args()
    scores = plan_scores(args.runs)
    text = table(scores)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        plot(scores, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
