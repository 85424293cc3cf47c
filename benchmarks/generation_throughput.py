"""Batched vs one-at-a-time greedy generation on CPU: questions/s and whether the answers are identical.

    python benchmarks/generation_throughput.py [--model FOLDER] [--questions 64] [--batch-size 16]

Without --model, a tiny-ta preset (random weights, synthetic tokenizer) answers synthetic test questions.
Prints `speedup=` (batched over batch 1) and `identical_answers=` on its last lines.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from llava_ckd.data.synthetic import SyntheticSpec
from llava_ckd.demo import prepare_synthetic
from llava_ckd.eval.generate import AnswerGenerator, GenerationRequest
from llava_ckd.eval.registry import get_benchmark
from llava_ckd.models import build_preset, load_vlm


def timed_answers(generator: AnswerGenerator, requests: list[GenerationRequest], batch_size: int):
    started = time.perf_counter()
    answers = []
    for start in range(0, len(requests), batch_size):
        answers += generator.answer_ids(requests[start:start + batch_size])
    return answers, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained model folder (default: random tiny-ta)")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        prepare_synthetic(data, SyntheticSpec(n_train=200, n_val=10, n_test=args.questions, n_captions=10))
        if args.model:
            model, processor = load_vlm(args.model)
        else:
            from transformers import AutoTokenizer
            model, processor = build_preset("tiny-ta", AutoTokenizer.from_pretrained(data / "tokenizer"))
        questions = get_benchmark("synthetic").questions(data / "test")
        requests = [GenerationRequest(q.prompt, q.image) for q in questions]
        generator = AnswerGenerator(model, processor, args.max_new_tokens)
        generator.answer_ids(requests[:2])  # warm-up
        single, single_seconds = timed_answers(generator, requests, 1)
        batched, batched_seconds = timed_answers(generator, requests, args.batch_size)

    n = len(requests)
    print(f"{n} questions, max_new_tokens {args.max_new_tokens}, {torch.get_num_threads()} threads")
    print(f"batch 1: {n / single_seconds:.1f} questions/s")
    print(f"batch {args.batch_size}: {n / batched_seconds:.1f} questions/s")
    print(f"speedup={single_seconds / batched_seconds:.2f}")
    print(f"identical_answers={batched == single}")


if __name__ == "__main__":
    main()
