"""Running a cascade: its stages in order, each skipped when finished with the same hash, resumed when interrupted.

Every stage folder gets `manifest.json` (name, plans, hash, Teacher, inputs, config, checkpoint, metrics,
wall time, status); the output root gets `cascade.json` (the chain, each plan's stages, Student and result,
each stage's status) and `results.md`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from llava_ckd.cascade.expand import Cascade, Node, SignalsJob, expand, require_inputs
from llava_ckd.cascade.lock import stage_lock
from llava_ckd.cascade.pairs import check_chain_tokenizers, check_image_token_pairs
from llava_ckd.cascade.recipe import load_recipe
from llava_ckd.cascade.results import evaluate_plans, write_results
from llava_ckd.config import StageConfig
from llava_ckd.distill.cache import SIGNALS_MANIFEST, write_teacher_cache
from llava_ckd.engines import processes
from llava_ckd.fingerprint import images_read_once
from llava_ckd.models.load import model_from_source
from llava_ckd.storage import write_whole
from llava_ckd.train.inputs import finished, stage_inputs, stale_differences
from llava_ckd.train.stage import checkpoint_complete, run_stage

STAGE_MANIFEST = "manifest.json"
CASCADE_FILE = "cascade.json"


def plan_cascade(recipe_path: Path, missing_ok: bool = False) -> Cascade:
    """Read, check and expand a recipe; nothing is trained. Inputs that are not there (data, models, tokenizers)
    are an error naming each of them, unless `missing_ok` (a dry run, `llava-ckd plan`: nothing is downloaded, not
    even a config): then they are listed in `Cascade.missing`."""
    recipe = load_recipe(recipe_path)
    check_chain_tokenizers(recipe, recipe_path)
    with images_read_once():
        cascade = expand(recipe, Path(recipe_path), download=not missing_ok)
    check_image_token_pairs(cascade)
    return cascade if missing_ok else require_inputs(cascade)


def read_manifest(node: Node) -> dict | None:
    path = node.directory / STAGE_MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, content: dict) -> None:
    write_whole(path, json.dumps(content, indent=2, sort_keys=True) + "\n")


def output_complete(node: Node) -> bool:
    if isinstance(node.job, StageConfig):
        return finished(node.job)
    return (node.job.output_dir / SIGNALS_MANIFEST).is_file()


def status(node: Node) -> str:
    """done (finished with this hash), stale (its folder holds work made from other inputs: `--restart`),
    resume (checkpoints to continue from) or todo."""
    manifest = read_manifest(node)
    if manifest and manifest["status"] == "finished" and manifest["hash"] == node.hash and output_complete(node):
        return "done"
    if isinstance(node.job, StageConfig):
        if stale_differences(node.job, stage_inputs(node.job)):
            return "stale"
        if any(checkpoint_complete(folder) for folder in node.directory.glob("checkpoint-*")):
            return "resume"
    return "todo"


def write_signals(job: SignalsJob) -> None:
    model, processor = model_from_source(job.teacher)
    write_teacher_cache(model, processor, job.conversations, job.images, job.output_dir, job.top_k, job.max_length,
                        job.batch_size)


def execute(node: Node, restart: bool) -> None:
    if isinstance(node.job, StageConfig):
        run_stage(node.job, restart=restart)
    else:
        write_signals(node.job)


def stage_manifest(cascade: Cascade, node: Node, state: str, started_at: str, wall_seconds: float | None) -> dict:
    metrics_file = node.output / "metrics.json"
    return {
        "name": cascade.name(node),
        "plans": cascade.plans_of(node),
        "hash": node.hash,
        "status": state,
        "teacher": cascade.teacher_of(node),
        "inputs": {role: {"name": cascade.name(upstream), "hash": upstream.hash, "path": str(upstream.output)}
                   for role, upstream in node.inputs.items()},
        "external_files": node.files,
        "config": node.job.resolved(),
        "checkpoint": str(node.output),
        "metrics": json.loads(metrics_file.read_text()) if metrics_file.is_file() else {},
        "started_at": started_at,
        "wall_seconds": wall_seconds,
    }


def write_cascade_file(cascade: Cascade, results: dict[str, dict]) -> Path:
    manifests = {node.hash: read_manifest(node) or {} for node in cascade.stages}
    content = {
        "recipe": str(cascade.source),
        "output": str(cascade.recipe.output),
        "chain": [{"name": name, "capacity": capacity} for name, capacity in cascade.capacities.items()],
        "plans": {plan: {"stages": [cascade.name(node) for node in nodes],
                         "student": cascade.name(cascade.students[plan]),
                         "result": results.get(plan)} for plan, nodes in cascade.plans.items()},
        "stages": [{"name": cascade.name(node), "hash": node.hash, "directory": str(node.directory),
                    "teacher": cascade.teacher_of(node), "plans": cascade.plans_of(node),
                    "status": manifests[node.hash].get("status", "pending"),
                    "wall_seconds": manifests[node.hash].get("wall_seconds")} for node in cascade.stages],
    }
    path = cascade.recipe.output / CASCADE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, content)
    return path


def run_stages(cascade: Cascade, echo: Callable[[str], None] = print, only: tuple[Node, ...] | None = None,
               restart: bool = False) -> None:
    """Every stage in order (or those in `only`). Launched as several processes, all of them train; the main
    process writes the files. With `restart`, a stage folder holding work made from other inputs is cleared
    and trained again instead of refused."""
    state = processes()
    total = len(cascade.stages)
    for number, node in enumerate(cascade.stages, 1):
        if only is not None and node not in only:
            continue
        with stage_lock(node, state.is_main_process):
            run_node(cascade, node, f"[{number}/{total}] {cascade.name(node)}", state, echo, restart)


def run_node(cascade: Cascade, node: Node, label: str, state, echo: Callable[[str], None],
             restart: bool = False) -> None:
    state.wait_for_everyone()  # the main process holds the stage's lock
    current = status(node)
    state.wait_for_everyone()  # every process has read the status before the main process writes
    if current == "done":
        previous = read_manifest(node)
        if state.is_main_process:
            write_json(node.directory / STAGE_MANIFEST, stage_manifest(cascade, node, "finished",
                                                                 previous["started_at"], previous["wall_seconds"]))
            echo(f"{label}: finished before, skipped")
        return
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if state.is_main_process:
        echo(f"{label}: {'resuming from its last checkpoint' if current == 'resume' else 'running'}")
        node.directory.mkdir(parents=True, exist_ok=True)
        write_json(node.directory / STAGE_MANIFEST, stage_manifest(cascade, node, "running", started_at, None))
    clock = time.perf_counter()
    try:
        execute(node, restart)
    except Exception as error:
        if state.is_main_process:
            failed = stage_manifest(cascade, node, "failed", started_at, round(time.perf_counter() - clock, 3))
            write_json(node.directory / STAGE_MANIFEST, failed | {"error": f"{type(error).__name__}: {error}"})
            write_cascade_file(cascade, {})
        raise
    wall_seconds = round(time.perf_counter() - clock, 3)
    if state.is_main_process:
        write_json(node.directory / STAGE_MANIFEST, stage_manifest(cascade, node, "finished", started_at, wall_seconds))
        write_cascade_file(cascade, {})
        echo(f"{label}: finished in {wall_seconds:.1f} s")
    state.wait_for_everyone()


def run_cascade(cascade: Cascade, echo: Callable[[str], None] = print, restart: bool = False) -> Path | None:
    """Run every stage not finished yet, evaluate each plan's Student, and write `results.md` (returned).

    Launched as several processes, they share the stages; the main process alone then evaluates and writes
    the results, and the others return None.
    """
    run_stages(cascade, echo, restart=restart)
    if not processes().is_main_process:
        return None
    results = evaluate_plans(cascade, echo)
    write_cascade_file(cascade, results)
    walls = {node.hash: (read_manifest(node) or {}).get("wall_seconds") or 0.0 for node in cascade.stages}
    return write_results(cascade, results, walls)


def describe(cascade: Cascade) -> str:
    """The plan: one stage per line, in run order, with its Teacher, the plans using it and its status."""
    recipe = cascade.recipe
    chain = " < ".join(f"{name} ({'?' if capacity is None else f'{capacity:,}'} parameters)"
                       for name, capacity in cascade.capacities.items())
    rows = [("#", "stage", "Teacher", "plans", "status")]
    with images_read_once():  # every stage's status at one instant
        rows += [(str(number), cascade.name(node), cascade.teacher_of(node), ", ".join(cascade.plans_of(node)),
                  status(node)) for number, node in enumerate(cascade.stages, 1)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [f"cascade {cascade.source} -> {recipe.output}", f"Teachers, smallest first: {chain}", ""]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    numbers = {node.hash: number for number, node in enumerate(cascade.stages, 1)}
    lines += ["", "stages of each plan, in run order (the last makes its Student):"]
    lines += [f"  {plan}: {' '.join(str(numbers[node.hash]) for node in nodes)}"
              for plan, nodes in cascade.plans.items()]
    if cascade.missing:
        lines += ["", f"missing inputs ({len(cascade.missing)}; the stage folders' hashes change once they are there):"]
        lines += [f"  {line}" for line in cascade.missing]
    return "\n".join(lines)
