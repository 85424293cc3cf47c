"""One distill step with the Student and the online Teacher partitioned by DeepSpeed ZeRO-3, against the same
step unpartitioned.

Run by `test_zero3.py` as `torchrun --nproc_per_node 2 -m tests.train.zero3_distill DATA TOKENIZER OUT`:
every process takes its half of a batch of 8; the Student is a ZeRO-3 training engine, the Teacher
`engines.zero3_inference`. Process 0 also runs the whole batch through unpartitioned copies and writes both
results to OUT (JSON).
"""

from __future__ import annotations

import sys
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_grad

from llava_ckd.engines import is_zero3_partitioned, zero3_inference
from tests.train.sharded_step import BATCH, Step


def main(data: Path, tokenizer_dir: Path, out: Path) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    step = Step.build(data, tokenizer_dir, world)
    config = {"train_micro_batch_size_per_gpu": BATCH // world, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True}
    trainable = [p for p in step.student.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=step.student, model_parameters=trainable, config=config,
                                      optimizer=torch.optim.SGD(trainable, lr=0.0))
    teacher = zero3_inference(step.teacher, config)
    partitioned = all(is_zero3_partitioned(p) and p.numel() == 0
                      for p in [*step.student.parameters(), *teacher.parameters()])

    result = step.loss(engine, teacher, step.halves[rank])
    engine.backward(result.loss * world)  # DeepSpeed averages gradients over processes; the counts are global
    loss = result.loss.detach().clone()
    dist.all_reduce(loss)
    gradients = {name: safe_get_full_grad(p) for name, p in step.student.named_parameters() if p.requires_grad}
    if rank == 0:
        step.write_comparison(out, loss.item(), gradients, partitioned_outside_forward=partitioned)
    dist.barrier()


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
