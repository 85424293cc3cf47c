"""How far cached top-k KD is from online KD: relative error of the response-KD term and of the loss, by k.

A tiny-ta Teacher and a tiny-student Student are first trained by SFT on the synthetic benchmark
(the Teacher longer), so that the Teacher's distributions are as peaked as a trained model's
rather than a random one's. Then the Teacher's top-k signals are cached for several k and the
distill loss (CE + forward KL, weights 1) is computed on training batches with each cache and
with the online Teacher. With k = the vocabulary size the error is 0 up to rounding.

Usage: python benchmarks/topk_kd_error.py [--teacher-steps 300] [--student-steps 60] [--k 1 4 16 64]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from llava_ckd.config import StageConfig
from llava_ckd.data.collator import Collator, ConversationDataset
from llava_ckd.data.conversations import load_conversations
from llava_ckd.data.synthetic import SyntheticSpec
from llava_ckd.demo import prepare_synthetic
from llava_ckd.distill.cache import TeacherCache, write_teacher_cache
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.terms import loss_terms
from llava_ckd.train.stage import run_stage

MAX_LENGTH = 256
BATCH_SIZE = 16


def sft(preset: str, data: Path, out: Path, steps: int) -> Path:
    return run_stage(StageConfig.model_validate({
        "kind": "sft",
        "model": {"preset": preset, "tokenizer": str(data / "tokenizer")},
        "data": {"conversations": str(data / "train" / "train.json"), "images": str(data / "train" / "images"),
                 "max_length": MAX_LENGTH},
        "output_dir": str(out),
        "train": ["vision", "projector", "llm"],
        "learning_rate": 1e-3, "batch_size": BATCH_SIZE, "max_steps": steps,
        "save_steps": 10 * steps, "logging_steps": 10 * steps,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--student-steps", type=int, default=60)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--eval-batches", type=int, default=4)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare_synthetic(data, SyntheticSpec(seed=0, n_train=args.teacher_steps * BATCH_SIZE, n_val=10, n_test=10,
                                              n_captions=10))
        teacher_dir = sft("tiny-ta", data, Path(tmp) / "teacher", args.teacher_steps)
        student_dir = sft("tiny-student", data, Path(tmp) / "student", args.student_steps)
        teacher = AutoModelForImageTextToText.from_pretrained(teacher_dir).eval()
        student = AutoModelForImageTextToText.from_pretrained(student_dir).eval()
        processor = AutoProcessor.from_pretrained(student_dir)
        vocab_size = len(processor.tokenizer)

        # the first training conversations (a distill stage's cache covers its training data)
        conversations, images = Path(tmp) / "measured.json", data / "train" / "images"
        records = json.loads((data / "train" / "train.json").read_text())
        conversations.write_text(json.dumps(records[:args.eval_batches * BATCH_SIZE]))
        dataset = ConversationDataset(load_conversations(conversations, images, processor, MAX_LENGTH)[0])
        collator = Collator(processor, processor.tokenizer.pad_token_id, with_sample_index=True)
        batches = [collator([dataset[i] for i in range(first, first + BATCH_SIZE)])
                   for first in range(0, args.eval_batches * BATCH_SIZE, BATCH_SIZE)]

        weights, spec = loss_terms(dict(ce=1.0, response_kd=1.0)), DivergenceSpec(name="forward_kl")
        with torch.no_grad():
            online = [Distiller(OnlineTeacher(teacher), weights, spec, vocab_size)(student, b) for b in batches]
            print(f"vocabulary {vocab_size}, {args.eval_batches} batches of {BATCH_SIZE}; Teacher SFT "
                  f"{args.teacher_steps} steps, Student {args.student_steps}")
            print(f"online: response_kd={sum(o.terms['response_kd'] for o in online) / len(online):.4f} "
                  f"loss={sum(o.loss for o in online) / len(online):.4f}")
            for k in [*args.k, vocab_size]:
                cache = TeacherCache(write_teacher_cache(teacher, processor, conversations, images,
                                                         Path(tmp) / f"cache-{k}", k, MAX_LENGTH, BATCH_SIZE))
                cached = [Distiller(cache, weights, spec, vocab_size)(student, b) for b in batches]
                kd_error = max(abs(c.terms["response_kd"] / o.terms["response_kd"] - 1)
                               for c, o in zip(cached, online, strict=True))
                loss_error = max(abs(c.loss / o.loss - 1) for c, o in zip(cached, online, strict=True))
                print(f"k={k:<5} response_kd relative error={kd_error:.2e}  loss relative error={loss_error:.2e} "
                      "(largest over the batches)")


if __name__ == "__main__":
    main()
