"""Tables and plots from finished runs: `report.md` and `accuracy.png`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from safetensors import safe_open

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class ModelResult:
    name: str
    parameters: int
    accuracy: float
    categories: dict[str, float]
    train_seconds: float


def llm_parameters(final: Path) -> int:
    """Parameters of the language model in a saved VLM, read from the safetensors header."""
    with safe_open(final / "model.safetensors", framework="pt") as weights:
        return sum(math.prod(weights.get_slice(key).get_shape())
                   for key in weights.keys() if "language_model" in key)  # noqa: SIM118


def write_report(out: Path, results: list[ModelResult], majority: dict[str, float],
                 stage_seconds: dict[str, float]) -> Path:
    categories = sorted(results[0].categories)
    lines = [
        "# Synthetic benchmark: model sizes and distillation plans",
        "",
        "Test split, exact match, percent. The LLM sizes differ; the vision tower is shared and frozen.",
        "`student: PLAN` rows continue the Student after its SFT with each plan's stages (`none`: more SFT);",
        "their train time is the wall time of the plan's stages, shared ones counted in every plan.",
        "",
        "| model | LLM parameters | overall | " + " | ".join(categories) + " | train time (s) |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in categories) + " | ---: |",
        "| majority answer | – | " + f"{100 * majority['overall']:.1f} | "
        + " | ".join(f"{100 * majority[c]:.1f}" for c in categories) + " | – |",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.parameters:,} | {r.accuracy:.1f} | "
                     + " | ".join(f"{r.categories[c]:.1f}" for c in categories) + f" | {r.train_seconds:.0f} |")
    plot = out / "accuracy.png"
    plot_accuracy(plot, results, majority, categories)
    lines += ["", f"![accuracy by model and question type]({plot.name})", "", "## Wall time per stage", "",
              "| stage | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in stage_seconds.items()]
    lines.append("")
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def plot_accuracy(path: Path, results: list[ModelResult], majority: dict[str, float], categories: list[str]) -> None:
    groups = ["overall", *categories]
    width = 0.8 / (len(results) + 1)
    figure, axes = plt.subplots(figsize=(12, 4.5))
    bars = [("majority answer", [100 * majority[g] for g in groups])]
    bars += [(r.name, [r.accuracy, *(r.categories[c] for c in categories)]) for r in results]
    for index, (label, values) in enumerate(bars):
        axes.bar([g + index * width for g in range(len(groups))], values, width, label=label)
    axes.set_xticks([g + width * len(results) / 2 for g in range(len(groups))], groups)
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.legend(fontsize=8, ncols=4)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
