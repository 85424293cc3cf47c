"""Score summaries for `score` and plain-text tables for `render`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence


def _mean_percent(scores: Sequence[float]) -> float:
    """The mean of per-item scores (0/1 or fractions), in percent."""
    return 100 * sum(scores) / len(scores)


def accuracy_summary(scores: Sequence[float], **breakdowns: Sequence[str]) -> dict:
    """`{"accuracy": mean score in percent, "n"}` of per-item scores, plus, per breakdown (one label
    per item, in the same order), `{label: mean score in percent of its items}` with labels sorted."""
    summary: dict = {"accuracy": _mean_percent(scores), "n": len(scores)}
    for name, labels in breakdowns.items():
        grouped: dict[str, list[float]] = defaultdict(list)
        for label, score in zip(labels, scores, strict=True):
            grouped[label].append(score)
        summary[name] = {label: _mean_percent(group) for label, group in sorted(grouped.items())}
    return summary


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the others right-aligned."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(row: list[str]) -> str:
        right = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        cells = [row[0].ljust(widths[0]), *right]
        return "  ".join(cells).rstrip()

    return "\n".join(line(row) for row in table)


def render_scores(
    title: str, headline: str, value: float, breakdowns: Mapping[str, Mapping[str, float]] | None = None
) -> str:
    """`title  headline: value`, then one (name, score) table per breakdown; 2 decimals."""
    parts = [f"{title}  {headline}: {value:.2f}"]
    for label, scores in (breakdowns or {}).items():
        rows = [(name, f"{score:.2f}") for name, score in scores.items()]
        parts.append(format_table((label, "score"), rows))
    return "\n\n".join(parts)
