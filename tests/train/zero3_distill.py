"""One distill step with the Student and the online Teacher partitioned by DeepSpeed ZeRO-3, against the same
step unpartitioned.

Run by `test_zero3.py` as `torchrun --nproc_per_node 2 -m tests.train.zero3_distill DATA TOKENIZER OUT` where
DeepSpeed is installed (`pip install -e .[deepspeed]`): every process takes its half of a batch of 8; the
Student is a ZeRO-3 training engine, the Teacher `engines.zero3_inference`. Process 0 also runs the whole
batch through unpartitioned copies and writes both results to OUT (JSON).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_grad
from transformers import AutoTokenizer

from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.engines import is_zero3_partitioned, zero3_inference
from llava_ckd.distill.loss import Distiller, TargetCounts
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.models import build_preset, set_trainable
from tests.distill.conftest import collate, load_dataset
from tests.train.fsdp2_distill import BATCH, WEIGHTS


def main(data: Path, tokenizer_dir: Path, out: Path) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    student, processor = build_preset("tiny-student", tokenizer, seed=0)
    teacher, _ = build_preset("tiny-ta", tokenizer, seed=1)
    set_trainable(student, ("projector", "llm"))
    dataset = load_dataset(data, processor)
    halves = [collate(dataset, processor, range(start, start + BATCH // world))
              for start in range(0, BATCH, BATCH // world)]
    counts = TargetCounts.of_batches(halves, student.config.image_token_id)
    spec = DivergenceSpec(name="forward_kl", temperature=2.0)
    reference = (copy.deepcopy(student), copy.deepcopy(teacher)) if rank == 0 else None

    config = {"train_micro_batch_size_per_gpu": BATCH // world, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True}
    trainable = [p for p in student.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=student, model_parameters=trainable, config=config,
                                      optimizer=torch.optim.SGD(trainable, lr=0.0))
    teacher = zero3_inference(teacher, config)
    partitioned = all(is_zero3_partitioned(p) and p.numel() == 0 for p in [*student.parameters(),
                                                                          *teacher.parameters()])

    result = Distiller(OnlineTeacher(teacher), WEIGHTS, spec, len(tokenizer))(engine, halves[rank], counts)
    engine.backward(result.loss * world)  # DeepSpeed averages gradients over processes; the counts are global
    loss = result.loss.detach().clone()
    dist.all_reduce(loss)
    gradients = {name: safe_get_full_grad(p).clone() for name, p in student.named_parameters() if p.requires_grad}

    if rank == 0:
        ref_student, ref_teacher = reference
        whole = collate(dataset, processor, range(BATCH))
        expected = Distiller(OnlineTeacher(ref_teacher), WEIGHTS, spec, len(tokenizer))(ref_student, whole, counts)
        expected.loss.backward()
        expected_gradients = {name: p.grad for name, p in ref_student.named_parameters() if p.grad is not None}
        out.write_text(json.dumps({
            "loss": loss.item(),
            "expected_loss": expected.loss.item(),
            "gradient_names": sorted(gradients) == sorted(expected_gradients),
            "largest_gradient": max(g.abs().max().item() for g in expected_gradients.values()),
            "largest_gradient_difference": max((gradients[name] - g).abs().max().item()
                                               for name, g in expected_gradients.items()),
            "partitioned_outside_forward": partitioned,
        }))
    dist.barrier()


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
