"""Each plan's final Student on the recipe's benchmark, and the table that compares the plans (`results.md`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llava_ckd.cascade.expand import Cascade
from llava_ckd.cascade.lock import stage_lock
from llava_ckd.cascade.plans import STUDENT
from llava_ckd.eval.run import evaluate

RESULTS_FILE = "results.md"


def evaluate_plans(cascade: Cascade, echo: Callable[[str], None] = print) -> dict[str, dict]:
    """Plan -> the benchmark result of its final Student (a Student shared by plans is evaluated once)."""
    evaluation = cascade.recipe.evaluation
    if evaluation is None:
        return {}
    by_stage: dict[str, dict] = {}
    results = {}
    for plan, student in cascade.students.items():
        if student.hash not in by_stage:
            echo(f"evaluating the Student of {plan}: {cascade.name(student)}")
            with stage_lock(student, holder=True):
                folder = student.directory / "eval" / evaluation.answers_folder(evaluation.data)
                by_stage[student.hash] = evaluate(student.output, evaluation.benchmark, evaluation.data, folder,
                                                  evaluation.batch_size)
        results[plan] = by_stage[student.hash]
    return results


def write_results(cascade: Cascade, results: dict[str, dict], wall_seconds: dict[str, float]) -> Path:
    """A markdown table: one row per plan with its Student's scores and the wall time of the stages behind it."""
    evaluation = cascade.recipe.evaluation
    metric = evaluation.metric if evaluation else None
    category_sets = {tuple(result.get("categories", {})) for result in results.values()}
    categories = list(category_sets.pop()) if len(category_sets) == 1 else []
    header = ["plan", "Student", *([metric] if results else []), *categories, "Student stages (s)", "all stages (s)"]
    lines = [f"# Cascade results: {cascade.source}", ""]
    if results:
        lines += [f"{evaluation.benchmark} ({evaluation.data}), {metric} of each plan's final Student.", ""]
    lines += ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    for plan, nodes in cascade.plans.items():
        scores = []
        if plan in results:
            if metric not in results[plan]:
                raise ValueError(f"evaluation.metric: {evaluation.benchmark} results have no {metric!r}; "
                               f"they have {', '.join(results[plan])}")
            scores = [results[plan][metric], *(results[plan]["categories"][name] for name in categories)]
        student_seconds = sum(wall_seconds[node.hash] for node in nodes if node.model == STUDENT)
        all_seconds = sum(wall_seconds[node.hash] for node in nodes)
        cells = [plan, cascade.name(cascade.students[plan]), *(f"{score:.1f}" for score in scores),
                 f"{student_seconds:.0f}", f"{all_seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    path = cascade.recipe.output / RESULTS_FILE
    path.write_text("\n".join(lines) + "\n")
    return path
