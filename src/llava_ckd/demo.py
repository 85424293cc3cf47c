"""`llava-ckd demo`: the study's question in miniature, on a CPU, in minutes: does KD from a Teacher beat the
Student's own training at the same step budget, on answers that carry real uncertainty?

1. render the synthetic benchmark of the study (configs/cascade/uncertain.yaml): up to 3 objects, 60% of them
   painted between two neighbouring colours so that annotators disagree as the scene makes them; colour, shape
   and count forms, scored with VQAv2's soft accuracy over 10 annotator answers;
2. take the shipped Teacher (`checkpoints/demo-teachers`: the study's `small` Teacher, with its tokenizer and the
   shared vision tower, in fp32 as trained, written from a finished study by `scripts/export_demo_teachers.py`);
3. run `llava-ckd study` on it over paired seeds: per seed the Student is pretrained on captions, then trained the
   same number of steps by `none` (its own fine-tuning) and by `direct` KD from the Teacher (cached signals);
4. write `report.md`: the Teacher, the Student before KD, both rows with their paired difference and the
   vision-use check, and what this many seeds can and cannot support; the plot `plans.png`.
The cascade plans (top-down, bottom-up) need the larger Teachers and the study's time: docs/results.md.
Every finished stage is reused, so a second run takes seconds.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llava_ckd.data.conversations import conversation_corpus
from llava_ckd.data.synthetic import SpecError, SyntheticSpec, write_benchmark
from llava_ckd.models.tokenizer import train_tokenizer
from llava_ckd.study.run import run_study

log = logging.getLogger(__name__)

SHIPPED_TEACHERS = Path(__file__).resolve().parents[2] / "checkpoints" / "demo-teachers"
DEMO_FORMS = ("colour_of_shape", "shape_of_colour", "count_all", "count_colour", "count_shape")
DEMO_SPEC = SyntheticSpec(max_objects=3, forms=DEMO_FORMS, blend=0.6, caption_turn=True)
DEMO_TEACHER = "small"


@dataclass(frozen=True)
class DemoSettings:
    out: Path
    seeds: int = 4
    teachers: Path = SHIPPED_TEACHERS
    spec: SyntheticSpec = field(default_factory=lambda: DEMO_SPEC)
    pretrain_steps: int = 150
    kd_steps: int = 1500
    batch_size: int = 32
    workers: int = 2


def prepare_synthetic(out: Path, spec: SyntheticSpec) -> None:
    """Render the benchmark into `out` and train its tokenizer into `out/tokenizer` (kept when `out` holds
    this spec's benchmark already; another spec's is refused)."""
    if (out / "tokenizer" / "tokenizer.json").is_file():
        written = json.loads((out / "spec.json").read_text())["spec"]
        wanted = json.loads(json.dumps(spec.record()))
        if written != wanted:
            changed = ", ".join(f"{key} {written.get(key)} -> {value}" for key, value in wanted.items()
                                if written.get(key) != value)
            raise SpecError(f"{out} holds the synthetic benchmark of another spec ({changed}); "
                             "choose another folder or delete it")
        return
    write_benchmark(out, spec)
    corpus = conversation_corpus([out / "train" / "train.json", out / "train" / "captions.json"])
    train_tokenizer(corpus).save_pretrained(out / "tokenizer")


def demo_recipe(settings: DemoSettings, data: Path) -> dict:
    """The study recipe of the demo: the shipped Teacher, ready; the Student from its preset, trained as in
    configs/cascade/uncertain.yaml."""
    teacher = settings.teachers / DEMO_TEACHER
    if not (teacher / "model.safetensors").is_file():
        raise FileNotFoundError(f"no shipped Teacher in {teacher} (write it from a finished study with "
                                "`python scripts/export_demo_teachers.py runs/uncertain checkpoints/demo-teachers`)")
    student = {"preset": "ladder-student", "tokenizer": str(teacher), "vision_init": str(settings.teachers / "vision")}
    return {
        "output": str(settings.out / "study"),
        "student": student,
        "teachers": [{"name": DEMO_TEACHER, "model": {"path": str(teacher)}}],
        "defaults": {
            "data": {"conversations": str(data / "train" / "train.json"), "images": str(data / "train" / "images"),
                     "max_length": 256},
            "train": ["projector", "llm"], "learning_rate": 2e-3, "batch_size": settings.batch_size,
            "save_steps": 250, "logging_steps": 50, "seed": 0,
        },
        "stages": [
            {"name": "pretrain", "kind": "pretrain", "data": {"conversations": str(data / "train" / "captions.json")},
             "learning_rate": 1e-3, "max_steps": settings.pretrain_steps},
            {"name": "kd", "kind": "distill", "without_kd": "sft", "budget": "per-plan", "signals": "cached",
             "top_k": 16, "max_steps": settings.kd_steps,
             "losses": [{"term": "ce", "weight": 1.0}, {"term": "response_kd", "weight": 1.0}],
             "divergence": {"name": "forward_kl", "temperature": 1.0}},
        ],
        "plans": ["none", "direct"],
        "evaluation": {"benchmark": "synthetic", "data": str(data / "test"), "batch_size": 100},
    }


def conclusions(summary: dict) -> list[str]:
    """What the paired 95% intervals support at this many seeds, comparison by comparison."""
    seeds = len(summary["seeds"])
    lines = [f"## What {seeds} seeds can and cannot say", ""]
    for row in summary["rows"]:
        if row["label"] == "none":
            continue
        for baseline in ("none", "direct"):
            difference = row.get(f"vs_{baseline}")
            if not difference or difference.get("n", 0) < 2:
                continue
            low, high = difference["ci95"]
            verdict = ("better" if low > 0 else "worse") if low > 0 or high < 0 else "no difference shown"
            lines.append(f"- {row['label']} − {baseline}: {difference['mean']:+.1f} points, 95% interval "
                         f"[{low:+.1f}, {high:+.1f}]: {verdict}.")
    lines += ["", f"With {seeds} seeds the t interval is wide (its factor is 12.7 for 2 seeds, 3.2 for 4, 2.4 for 8): "
              "a gain of a few points can be told from seed noise, a difference of a point between ways of "
              "distilling cannot. Which plan of the cascade helps, and how the gain changes with the Teacher's "
              "size, is the study's question (`llava-ckd study configs/cascade/uncertain.yaml --seeds 8`, "
              "docs/results.md).", ""]
    return lines


def run_demo(settings: DemoSettings) -> Path:
    started = time.perf_counter()
    data = settings.out / "data"
    prepare_synthetic(data, settings.spec)
    recipe = settings.out / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(demo_recipe(settings, data), sort_keys=False))
    study = run_study(recipe, list(range(settings.seeds)), workers=settings.workers, layouts=False)
    summary = json.loads((study / "summary.json").read_text())
    report = settings.out / "report.md"
    text = (study / "summary.md").read_text().replace("# Study summary", "# Demo: the study's setting in miniature", 1)
    report.write_text(text + "\n" + "\n".join(conclusions(summary))
                      + "\n![The Student by plan, per seed](study/plans.png)\n")
    log.info("demo finished in %.0f s: %s", time.perf_counter() - started, report)
    return report
