"""`llava-ckd demo`: the whole pipeline on the synthetic benchmark, on a CPU, in minutes.

1. render the benchmark and train a tokenizer on it;
2. train the shared vision encoder once (the demo's stand-in for SigLIP), then keep it frozen;
3. for each model size (Student, TA, Teacher): `pretrain` on captions, then `sft` on the instructions;
4. evaluate every model on the test split; write `report.md` and `accuracy.png`.
Every step is skipped when its output already exists, so a second run takes seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from llava_ckd.config import StageConfig
from llava_ckd.data.conversations import conversation_corpus
from llava_ckd.data.synthetic import SyntheticSpec, majority_baseline, write_benchmark
from llava_ckd.eval.run import evaluate
from llava_ckd.models.tokenizer import train_tokenizer
from llava_ckd.report import ModelResult, write_report
from llava_ckd.train.stage import run_stage
from llava_ckd.train.vision import train_vision_encoder

log = logging.getLogger(__name__)

SIZES = ("tiny-student", "tiny-ta", "tiny-teacher")


@dataclass(frozen=True)
class DemoSettings:
    out: Path
    seed: int = 0
    n_train: int = 20000
    n_captions: int = 5000
    n_test: int = 1000
    vision_steps: int = 600
    pretrain_steps: int = 150
    sft_steps: int = 600
    batch_size: int = 32
    learning_rate: float = 1e-3


def prepare_synthetic(out: Path, spec: SyntheticSpec) -> None:
    """Render the benchmark into `out` and train its tokenizer into `out/tokenizer`."""
    if (out / "tokenizer" / "tokenizer.json").is_file():
        return
    write_benchmark(out, spec)
    corpus = conversation_corpus([out / "train" / "train.json", out / "train" / "captions.json"])
    train_tokenizer(corpus).save_pretrained(out / "tokenizer")


def stage_config(settings: DemoSettings, kind: str, model: dict, data: Path, output_dir: Path) -> StageConfig:
    conversations = "captions.json" if kind == "pretrain" else "train.json"
    return StageConfig.model_validate({
        "kind": kind,
        "model": model,
        "data": {"conversations": data / "train" / conversations, "images": data / "train" / "images",
                 "max_length": 256},
        "output_dir": output_dir,
        # From-scratch LLMs have no language yet: both stages train them (the vision tower stays frozen).
        "train": ["projector", "llm"],
        "learning_rate": settings.learning_rate,
        "batch_size": settings.batch_size,
        "max_steps": settings.pretrain_steps if kind == "pretrain" else settings.sft_steps,
        "save_steps": 100,
        "logging_steps": 25,
        "seed": settings.seed,
    })


def train_size(settings: DemoSettings, preset: str, data: Path, vision: Path) -> Path:
    runs = settings.out / "runs" / preset
    pretrained = run_stage(stage_config(
        settings, "pretrain", {"preset": preset, "tokenizer": data / "tokenizer", "vision_init": vision},
        data, runs / "pretrain"))
    return run_stage(stage_config(settings, "sft", {"path": str(pretrained)}, data, runs / "sft"))


def run_demo(settings: DemoSettings) -> Path:
    started = time.perf_counter()
    data = settings.out / "data"
    prepare_synthetic(data, SyntheticSpec(seed=settings.seed, n_train=settings.n_train, n_val=500,
                                          n_test=settings.n_test, n_captions=settings.n_captions))
    vision = train_vision_encoder(data, settings.out / "vision", steps=settings.vision_steps, seed=settings.seed)
    results = []
    for preset in SIZES:
        final = train_size(settings, preset, data, vision)
        scores = evaluate(final, "synthetic", data / "test", settings.out / "eval" / preset, batch_size=64)
        results.append(ModelResult.from_run(preset, final, scores))
    report = write_report(settings.out, results, majority_baseline(data / "test" / "answer_key.jsonl"))
    log.info("demo finished in %.0f s: %s", time.perf_counter() - started, report)
    return report
