"""`llava-ckd demo`: the study's setting in miniature, on a CPU, in minutes.

1. render the synthetic benchmark's study setting (up to 3 objects; colour, shape, count and existence forms);
2. take the shipped Teachers (`checkpoints/demo-teachers`: the study's `small` and `medium` Teachers in fp16, with
   their tokenizer and the shared vision tower, written from a finished study by `scripts/export_demo_teachers.py`);
3. run `llava-ckd study` on that chain with fewer seeds: per seed the Student is pretrained and fine-tuned from its
   own initialisation, then trained the same number of steps four ways (`none`, `direct`, `top-down`, `bottom-up`,
   cached Teacher signals) and once more by direct KD from the smaller Teacher;
4. write `report.md`: the Teachers, the Student after SFT, every plan with its paired differences, and what this
   many seeds can and cannot support; the plots `gap.png` and `plans.png`.
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
from llava_ckd.data.synthetic import SyntheticSpec, write_benchmark
from llava_ckd.models.tokenizer import train_tokenizer
from llava_ckd.study.run import run_study

log = logging.getLogger(__name__)

SHIPPED_TEACHERS = Path(__file__).resolve().parents[2] / "checkpoints" / "demo-teachers"
STUDY_FORMS = ("colour_of_shape", "shape_of_colour", "count_all", "count_colour", "count_shape", "colour_and_shape")
STUDY_SPEC = SyntheticSpec(max_objects=3, forms=STUDY_FORMS)


@dataclass(frozen=True)
class DemoSettings:
    out: Path
    seeds: int = 2
    teachers: Path = SHIPPED_TEACHERS
    spec: SyntheticSpec = field(default_factory=lambda: STUDY_SPEC)
    pretrain_steps: int = 150
    sft_steps: int = 1000
    kd_steps: int = 400
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
            raise ValueError(f"{out} holds the synthetic benchmark of another spec ({changed}); "
                             "choose another folder or delete it")
        return
    write_benchmark(out, spec)
    corpus = conversation_corpus([out / "train" / "train.json", out / "train" / "captions.json"])
    train_tokenizer(corpus).save_pretrained(out / "tokenizer")


def kd_conversations(settings: DemoSettings, data: Path) -> Path:
    """The conversations the steps after SFT see (as many as they have steps for), so Teacher signals are cached
    for those alone."""
    path = data / "train" / f"kd-{settings.kd_steps * settings.batch_size}.json"
    if not path.is_file():
        conversations = json.loads((data / "train" / "train.json").read_text())
        path.write_text(json.dumps(conversations[: settings.kd_steps * settings.batch_size]))
    return path


def demo_recipe(settings: DemoSettings, data: Path) -> dict:
    """The study recipe of the demo: the shipped Teachers as a ready chain, the Student from its preset."""
    teachers = settings.teachers
    if not (teachers / "small" / "model.safetensors").is_file():
        raise FileNotFoundError(f"no shipped Teachers in {teachers} (write them from a finished study with "
                                "`python scripts/export_demo_teachers.py runs/study checkpoints/demo-teachers`)")
    student = {"preset": "ladder-student", "tokenizer": str(teachers / "small"),
               "vision_init": str(teachers / "vision")}
    return {
        "output": str(settings.out / "study"),
        "student": student,
        "teachers": [{"name": name, "model": {"path": str(teachers / name)}} for name in ("small", "medium")],
        "defaults": {
            "data": {"conversations": str(data / "train" / "train.json"), "images": str(data / "train" / "images"),
                     "max_length": 256},
            "train": ["projector", "llm"], "learning_rate": 2e-3, "batch_size": settings.batch_size,
            "save_steps": 250, "logging_steps": 50, "seed": 0,
        },
        "stages": [
            {"name": "pretrain", "kind": "pretrain", "data": {"conversations": str(data / "train" / "captions.json")},
             "learning_rate": 1e-3, "max_steps": settings.pretrain_steps},
            {"name": "sft", "kind": "sft", "max_steps": settings.sft_steps},
            {"name": "kd", "kind": "distill", "without_kd": "sft", "budget": "per-plan", "signals": "cached",
             "data": {"conversations": str(kd_conversations(settings, data))},
             "top_k": 16, "max_steps": settings.kd_steps, "learning_rate": 1e-3,
             "losses": {"ce": 1.0, "response_kd": 1.0, "visual_kd": 0.0, "relation_kd": 0.0},
             "divergence": {"name": "forward_kl", "temperature": 1.0}},
        ],
        "plans": ["none", "direct", "top-down", "bottom-up"],
        "evaluation": {"benchmark": "synthetic", "data": str(data / "test"), "batch_size": 100},
    }


def conclusions(summary: dict) -> list[str]:
    """What the paired 95% intervals support at this many seeds, comparison by comparison."""
    seeds = len(summary["seeds"])
    lines = [f"## What {seeds} seeds can and cannot say", ""]
    for row in summary["rows"]:
        for baseline in ("none", "direct"):
            difference = row.get(f"vs_{baseline}")
            if not difference or difference.get("n", 0) < 2:
                continue
            low, high = difference["ci95"]
            verdict = ("better" if low > 0 else "worse") if low > 0 or high < 0 else "no difference shown"
            lines.append(f"- {row['label']} − {baseline}: {difference['mean']:+.1f} points, 95% interval "
                         f"[{low:+.1f}, {high:+.1f}]: {verdict}.")
    lines += ["", f"With {seeds} seeds the t interval is wide (its factor is 12.7 for 2 seeds, 2.8 for 5): "
              "a difference of a point or two needs the 5-seed study (`llava-ckd study configs/cascade/study.yaml "
              "--seeds 5 --teacher-sets 3`, results in docs/results.md) to be told from seed noise.", ""]
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
                      + "\n![KD gain by capacity gap](study/gap.png)\n\n![The Student by plan](study/plans.png)\n")
    log.info("demo finished in %.0f s: %s", time.perf_counter() - started, report)
    return report
