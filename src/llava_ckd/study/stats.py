"""Summaries of per-seed accuracies: mean, spread and 95% interval, and differences paired by seed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

from scipy.stats import t as student_t

CONFIDENCE = 0.95


def interval_halfwidth(std: float, n: int) -> float:
    """Half-width of the two-sided 95% t interval of a mean of `n` values with sample std `std`."""
    return student_t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n) if n > 1 else math.nan


def describe(values: list[float]) -> dict:
    """n, mean, sample std, standard error and 95% t interval of the mean."""
    n = len(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else math.nan
    half = interval_halfwidth(std, n)
    return {"n": n, "mean": mean, "std": std, "se": std / math.sqrt(n) if n > 1 else math.nan,
            "ci95": [mean - half, mean + half]}


def paired(scores: Mapping[int, float], baseline: Mapping[int, float]) -> dict:
    """`scores` minus `baseline`, seed by seed over the seeds both have: the differences and their summary."""
    seeds = sorted(set(scores) & set(baseline))
    differences = {seed: scores[seed] - baseline[seed] for seed in seeds}
    return {"per_seed": differences, **describe(list(differences.values()))} if seeds else {"per_seed": {}, "n": 0}
