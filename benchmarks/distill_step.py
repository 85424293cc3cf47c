"""Time of one distill training step, with cached top-k Teacher signals or an online Teacher, vs one SFT step.

The same tiny Student (tiny-student preset; projector and LLM train, AdamW) steps over the same
batches of the synthetic benchmark, fp32 on the CPU:

  sft      the SFT stage's step: cross-entropy alone through the same fused head (`Distiller.cross_entropy`)
  cached   CE + forward KL from top-k signals written beforehand (`cache-teacher`), read per sample
  online   CE + forward KL from the tiny-teacher preset run at every step

A step is forward, loss, backward and the optimizer step; batches are collated beforehand. The
variants alternate within each round, so that load from other processes hits them alike, and each
timed step follows an untimed one of the same variant, so that no step pays for the memory the
previous variant left behind (here an SFT step right after an online one took about twice as long).
The median over the rounds is reported. The Teacher's share is the median time of its forward
pass over the median online step.

Usage: python benchmarks/distill_step.py [--batch-size 16] [--rounds 15] [--top-k 16] [--threads 2]
The last three lines are ``cached_over_sft=``, ``online_over_sft=`` and ``teacher_share=``
(the goal: cached ≤ 1.15).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from llava_ckd.data.collator import Collator, ConversationDataset
from llava_ckd.data.conversations import load_conversations
from llava_ckd.data.synthetic import SyntheticSpec
from llava_ckd.demo import prepare_synthetic
from llava_ckd.distill.cache import TeacherCache, write_teacher_cache
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.terms import loss_terms
from llava_ckd.models import build_preset, set_trainable

WARMUP_ROUNDS = 3
MAX_LENGTH = 256


class TimedTeacher(OnlineTeacher):
    def __init__(self, model):
        super().__init__(model)
        self.seconds: list[float] = []

    def __call__(self, batch):
        start = time.perf_counter()
        outputs = super().__call__(batch)
        self.seconds.append(time.perf_counter() - start)
        return outputs


def prepare(folder: Path, batches: int, batch_size: int, top_k: int):
    """Synthetic data, its tokenizer, the Student, the Teacher, the Teacher's cache and collated batches."""
    prepare_synthetic(folder, SyntheticSpec(seed=0, n_train=batches * batch_size, n_val=10, n_test=10, n_captions=10))
    conversations, images = folder / "train" / "train.json", folder / "train" / "images"
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    student, processor = build_preset("tiny-student", tokenizer, seed=0)
    set_trainable(student, ("projector", "llm"))
    teacher, _ = build_preset("tiny-teacher", tokenizer, seed=1)
    cache = write_teacher_cache(teacher, processor, conversations, images, folder / "cache", top_k, MAX_LENGTH,
                                batch_size=batch_size)
    dataset = ConversationDataset(load_conversations(conversations, images, processor, MAX_LENGTH)[0])
    collator = Collator(processor, tokenizer.pad_token_id, with_sample_index=True)
    collated = [collator([dataset[i] for i in range(start, start + batch_size)])
                for start in range(0, batches * batch_size, batch_size)]
    return student.train(), teacher, TeacherCache(cache), collated, len(tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, used in turn")
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        student, teacher_model, cache, batches, vocab_size = prepare(Path(tmp), args.batches, args.batch_size,
                                                                     args.top_k)
        teacher = TimedTeacher(teacher_model)
        weights, spec = loss_terms(dict(ce=1.0, response_kd=1.0)), DivergenceSpec(name="forward_kl")
        losses = {
            "sft": lambda batch: Distiller.cross_entropy(len(student.lm_head.weight))(student, batch).loss,
            "cached": lambda batch: Distiller(cache, weights, spec, vocab_size)(student, batch).loss,
            "online": lambda batch: Distiller(teacher, weights, spec, vocab_size)(student, batch).loss,
        }
        optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)
        def step(name: str, batch: dict) -> float:
            start = time.perf_counter()
            losses[name](batch).backward()
            optimizer.step()
            optimizer.zero_grad()
            return time.perf_counter() - start

        seconds = {name: [] for name in losses}
        for round_number in range(WARMUP_ROUNDS + args.rounds):
            for name in losses:
                step(name, batches[(round_number + 1) % len(batches)])  # settles the memory the last variant left
                elapsed = step(name, batches[round_number % len(batches)])
                if round_number >= WARMUP_ROUNDS:
                    seconds[name].append(elapsed)
        teacher_seconds = statistics.median(teacher.seconds[2 * WARMUP_ROUNDS + 1::2])

    median = {name: statistics.median(times) for name, times in seconds.items()}
    print(f"batch {args.batch_size}, {args.threads} threads, fp32, top-k {args.top_k}, vocabulary {vocab_size}, "
          f"median of {args.rounds} rounds after {WARMUP_ROUNDS} warm-up rounds")
    for name, value in median.items():
        print(f"{name:<8}{value * 1000:9.1f} ms/step")
    print(f"{'teacher':<8}{teacher_seconds * 1000:9.1f} ms (forward pass inside the online step)")
    print(f"cached_over_sft={median['cached'] / median['sft']:.3f}")
    print(f"online_over_sft={median['online'] / median['sft']:.3f}")
    print(f"teacher_share={teacher_seconds / median['online']:.3f}")


if __name__ == "__main__":
    main()
