"""Plain-text tables for `render`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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
