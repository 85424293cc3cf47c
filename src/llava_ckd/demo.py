"""`llava-ckd demo`: the whole pipeline on the synthetic benchmark, on a CPU, in minutes.

1. render the benchmark and train a tokenizer on it;
2. train the shared vision encoder once (the demo's stand-in for SigLIP), then keep it frozen;
3. for each model size (Student, TA, Teacher): `pretrain` on captions, then `sft` on the instructions;
4. the Student continues four ways for the same number of steps per stage (`llava-ckd cascade` on a
   recipe written to `plans.yaml`): `none` (more SFT), `direct` KD from the Teacher, `top-down` (TAKD)
   and `bottom-up` (CKD), with cached top-k Teacher signals;
5. evaluate every model on the test split; write `report.md` and `accuracy.png`.
Every step is skipped when its output already exists, so a second run takes seconds.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from llava_ckd.cascade import describe, plan_cascade, run_cascade
from llava_ckd.config import StageConfig
from llava_ckd.data.conversations import conversation_corpus
from llava_ckd.data.synthetic import SyntheticSpec, majority_baseline, write_benchmark
from llava_ckd.eval.run import evaluate
from llava_ckd.models.tokenizer import train_tokenizer
from llava_ckd.report import ModelResult, llm_parameters, write_report
from llava_ckd.train.stage import run_stage
from llava_ckd.train.vision import train_vision_encoder

log = logging.getLogger(__name__)

SIZES = ("tiny-student", "tiny-ta", "tiny-teacher")
PLANS = ("none", "direct", "top-down", "bottom-up")


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
    kd_steps: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-3


def prepare_synthetic(out: Path, spec: SyntheticSpec) -> None:
    """Render the benchmark into `out` and train its tokenizer into `out/tokenizer` (kept when `out` holds
    this spec's benchmark already; another spec's is refused)."""
    if (out / "tokenizer" / "tokenizer.json").is_file():
        written = json.loads((out / "spec.json").read_text())["spec"]
        wanted = json.loads(json.dumps(asdict(spec)))
        if written != wanted:
            changed = ", ".join(f"{key} {written.get(key)} -> {value}" for key, value in wanted.items()
                                if written.get(key) != value)
            raise ValueError(f"{out} holds the synthetic benchmark of another spec ({changed}); "
                             "choose another folder or delete it")
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


def plans_recipe(settings: DemoSettings, data: Path, finals: dict[str, Path]) -> dict:
    """The cascade recipe of step 4: the trained sizes are the Student and the Teacher chain."""
    kd_data = data / "train" / "kd.json"
    if not kd_data.is_file():  # the conversations the KD stages see: as many as they have steps for
        conversations = json.loads((data / "train" / "train.json").read_text())
        kd_data.write_text(json.dumps(conversations[: settings.kd_steps * settings.batch_size]))
    return {
        "output": str(settings.out / "plans"),
        "student": {"path": str(finals["tiny-student"])},
        "teachers": [{"name": size, "model": {"path": str(finals[size])}} for size in SIZES[1:]],
        "defaults": {
            "data": {"conversations": str(kd_data), "images": str(data / "train" / "images"), "max_length": 256},
            "train": ["projector", "llm"], "learning_rate": settings.learning_rate / 2,
            "batch_size": settings.batch_size, "save_steps": 100, "logging_steps": 25, "seed": settings.seed,
        },
        "stages": [{
            "name": "kd", "kind": "distill", "without_kd": "sft", "signals": "cached", "top_k": 16,
            "max_steps": settings.kd_steps, "losses": {"ce": 1.0, "response_kd": 1.0, "visual_kd": 0.0,
                                                       "relation_kd": 0.0},
            "divergence": {"name": "forward_kl", "temperature": 1.0},
        }],
        "plans": list(PLANS),
        "evaluation": {"benchmark": "synthetic", "data": str(data / "test"), "batch_size": 64},
    }


def run_plans(settings: DemoSettings, data: Path, finals: dict[str, Path]) -> tuple[list[ModelResult], dict]:
    recipe = settings.out / "plans.yaml"
    recipe.write_text(yaml.safe_dump(plans_recipe(settings, data, finals), sort_keys=False))
    cascade = plan_cascade(recipe)
    print(describe(cascade), flush=True)
    run_cascade(cascade)
    summary = json.loads((settings.out / "plans" / "cascade.json").read_text())
    seconds = {stage["name"]: stage["wall_seconds"] for stage in summary["stages"]}
    results = [
        ModelResult(f"student: {plan}", llm_parameters(finals["tiny-student"]), entry["result"]["accuracy"],
                    entry["result"]["categories"], sum(seconds[name] for name in entry["stages"]))
        for plan, entry in ((plan, summary["plans"][plan]) for plan in PLANS)
    ]
    return results, seconds


def stage_runtime(final: Path) -> float:
    return json.loads((final / "metrics.json").read_text())["train_runtime"]


def run_demo(settings: DemoSettings) -> Path:
    started = time.perf_counter()
    data = settings.out / "data"
    prepare_synthetic(data, SyntheticSpec(seed=settings.seed, n_train=settings.n_train, n_val=500,
                                          n_test=settings.n_test, n_captions=settings.n_captions))
    vision = train_vision_encoder(data, settings.out / "vision", steps=settings.vision_steps, seed=settings.seed)
    results, finals, stage_seconds = [], {}, {}
    for preset in SIZES:
        finals[preset] = train_size(settings, preset, data, vision)
        seconds = {f"{preset}/{stage}": stage_runtime(finals[preset].parent.parent / stage / "final")
                   for stage in ("pretrain", "sft")}
        stage_seconds |= seconds
        scores = evaluate(finals[preset], "synthetic", data / "test", settings.out / "eval" / preset, batch_size=64)
        results.append(ModelResult(preset, llm_parameters(finals[preset]), scores["accuracy"], scores["categories"],
                                   sum(seconds.values())))
    plan_results, plan_seconds = run_plans(settings, data, finals)
    report = write_report(settings.out, results + plan_results,
                          majority_baseline(data / "test" / "answer_key.jsonl"), stage_seconds | plan_seconds)
    log.info("demo finished in %.0f s: %s", time.perf_counter() - started, report)
    return report
