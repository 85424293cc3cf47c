"""`llava-ckd study`: every cascade of a study (`variants.py`), side by side on the machine's cores, resumable.

First each Teacher (and Teacher set) is trained and its signals cached, longest first; then the cascades
run, those needing only the smaller Teachers first. Workers share one stage store and take each stage
under a lock, so a stage is trained once and a killed study resumes: finished stages are skipped, a
stage cut short resumes from its last checkpoint, and answers already written are kept. Each job's
output goes to OUT/logs/<job>.log.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from llava_ckd.cascade.expand import Cascade, Node
from llava_ckd.cascade.recipe import load_recipe
from llava_ckd.cascade.run import plan_cascade, run_cascade, run_stages
from llava_ckd.config import read_yaml
from llava_ckd.errors import UserError
from llava_ckd.study.summary import write_summary
from llava_ckd.study.variants import CHAIN, Job, write_jobs


class StudyError(UserError, RuntimeError):
    """Some of a study's jobs failed; the message names them and their logs."""


@dataclass(frozen=True)
class Task:
    """A cascade to run whole, or only one Teacher's own training and signals (`teacher`)."""

    name: str
    recipe: Path
    teacher: str | None = None


def standalone_stages(cascade: Cascade, model: str) -> tuple[Node, ...]:
    """The stages a Teacher runs on its own (not distilled): its training and its signal caches."""
    return tuple(node for node in cascade.stages if node.model == model and not node.distilled)


def teacher_tasks(jobs: list[Job], cascades: dict[Path, Cascade]) -> list[Task]:
    """One task per distinct Teacher training, the costliest first (steps x parameters): it starts first."""
    tasks: dict[tuple[str, ...], tuple[int, Task]] = {}
    for job in jobs:
        cascade = cascades[job.recipe]
        for name in job.variant.chain:
            stages = standalone_stages(cascade, f"teacher-{name}")
            key = tuple(node.hash for node in stages)
            if stages and key not in tasks:
                steps = sum(node.job.max_steps or 0 for node in stages if hasattr(node.job, "max_steps"))
                task = Task(f"teacher-{name}-set-{job.variant.teacher_set}", job.recipe, f"teacher-{name}")
                tasks[key] = (steps * cascade.capacities[name], task)
    return [task for _, task in sorted(tasks.values(), key=lambda entry: -entry[0])]


def cascade_tasks(jobs: list[Job]) -> list[Task]:
    """Cascades that need fewer Teachers first, so they run while the largest Teacher trains."""
    ordered = sorted(jobs, key=lambda job: (len(job.variant.chain), job.variant.name != CHAIN, job.seed))
    return [Task(f"{job.variant.name}-seed-{job.seed}", job.recipe) for job in ordered]


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_task(task: Task, logs: Path) -> tuple[str, float]:
    """Run one task with its output in `logs/<name>.log`; returns its name and wall time."""
    clock = time.perf_counter()
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{task.name}.log").open("a") as log_file:
        saved = os.dup(1), os.dup(2)
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        handler = logging.StreamHandler(sys.stderr)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        try:
            cascade = plan_cascade(task.recipe)
            echo = partial(print, flush=True)
            if task.teacher is None:
                run_cascade(cascade, echo=echo)
            else:
                run_stages(cascade, echo=echo, only=standalone_stages(cascade, task.teacher))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            logging.getLogger().removeHandler(handler)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    return task.name, time.perf_counter() - clock


def run_study(recipe_path: Path, seeds: list[int], teacher_sets: int = 1, workers: int = 2,
              out: Path | None = None, layouts: bool = True, with_sub_chains: bool = False,
              plans: tuple[str, ...] | None = None) -> Path:
    """Run the study of `recipe_path` and write OUT/summary.json, summary.md and the plots; returns OUT.

    `layouts`: also the paper's per-Teacher budget and the continued schedule for bottom-up;
    `with_sub_chains`: also bottom-up through every other choice of Teachers ending at the largest;
    `plans`: those of the recipe's plans the whole chain runs (default: all)."""
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path)
    if plans and (unknown := [plan for plan in plans if plan not in recipe.plans]):
        raise UserError(f"--plans: {', '.join(unknown)} not among the recipe's plans ({', '.join(recipe.plans)})")
    root = Path(out) if out else recipe.output
    jobs = write_jobs(read_yaml(recipe_path), recipe, seeds, teacher_sets, root, layouts, with_sub_chains, plans)
    cascades = {job.recipe: plan_cascade(job.recipe) for job in jobs}   # every recipe checked before training
    tasks = teacher_tasks(jobs, cascades) + cascade_tasks(jobs)
    threads = max(1, (os.cpu_count() or 1) // workers)
    clock = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(threads,)) as pool, \
            tqdm(total=len(tasks), desc="study", unit="job") as progress:
        futures = {pool.submit(run_task, task, root / "logs"): task for task in tasks}
        failed = []
        for future in as_completed(futures):
            task = futures[future]
            try:
                _, seconds = future.result()
                progress.write(f"{task.name}: done in {seconds:.0f} s")
            except Exception as error:  # noqa: BLE001 - reported with its log, the other jobs go on
                failed.append(f"{task.name} ({type(error).__name__}: {error}; log: {root / 'logs' / task.name}.log)")
                progress.write(f"{task.name}: failed")
            progress.update()
    if failed:
        raise StudyError("study jobs failed (rerun the study to retry them; finished stages are kept):\n  "
                         + "\n  ".join(failed))
    environment = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                   "workers": workers, "threads_per_worker": threads}
    return write_summary(root, recipe, jobs, cascades, time.perf_counter() - clock, environment)

