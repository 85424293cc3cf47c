"""SFT training throughput (samples/s) of each tiny preset on this machine.

Runs the real stage path (synthetic data -> LLaVA conversations -> Trainer) for a few dozen steps per
preset, with vision tower, projector and LLM all training, and times the steady-state steps (the first
steps, which include start-up, are left out).

    python benchmarks/sft_throughput.py [--steps 40] [--batch-size 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, TrainerCallback

from llava_ckd.config import StageConfig
from llava_ckd.data.synthetic import SyntheticSpec
from llava_ckd.demo import prepare_synthetic
from llava_ckd.models import PRESETS
from llava_ckd.train.stage import run_stage

WARMUP_STEPS = 5


class StepClock(TrainerCallback):
    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def measure(preset: str, data: Path, out: Path, steps: int, batch_size: int) -> tuple[float, int]:
    config = StageConfig.model_validate({
        "kind": "sft",
        "model": {"preset": preset, "tokenizer": str(data / "tokenizer")},
        "data": {"conversations": str(data / "train" / "train.json"), "images": str(data / "train" / "images"),
                 "max_length": 512},
        "output_dir": str(out / preset),
        "train": ["vision", "projector", "llm"],
        "learning_rate": 1e-3, "batch_size": batch_size, "max_steps": steps,
        "save_steps": 10 * steps, "logging_steps": 10 * steps,
    })
    clock = StepClock()
    final = run_stage(config, callbacks=[clock])
    timed = clock.ends[WARMUP_STEPS - 1:]
    samples_per_second = (len(timed) - 1) * batch_size / (timed[-1] - timed[0])
    parameters = sum(p.numel() for p in AutoModelForImageTextToText.from_pretrained(final).parameters())
    return samples_per_second, parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare_synthetic(data, SyntheticSpec(seed=0, n_train=args.steps * args.batch_size, n_val=10, n_test=10,
                                              n_captions=10))
        rows = [(preset, *measure(preset, data, Path(tmp) / "runs", args.steps, args.batch_size))
                for preset in PRESETS]

    print(f"\nSFT throughput, batch {args.batch_size}, {args.threads} threads, fp32, "
          f"steps {WARMUP_STEPS}-{args.steps} timed")
    print(f"{'preset':<20}{'parameters':>12}{'samples/s':>12}")
    for preset, samples_per_second, parameters in rows:
        print(f"{preset:<20}{parameters:>12,}{samples_per_second:>12.1f}")


if __name__ == "__main__":
    main()
