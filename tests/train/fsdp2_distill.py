"""One distill step with the Student and the online Teacher sharded by FSDP2, against the same step unsharded.

Run by `test_fsdp2.py` as `torchrun --nproc_per_node 2 -m tests.train.fsdp2_distill DATA TOKENIZER OUT`:
every process takes its half of a batch of 8; the Student is sharded as accelerate's FSDP2 plugin does it
(each decoder/encoder layer, then the root), the Teacher by `engines.shard_layers` (layers only). Process 0
also runs the whole batch through unsharded copies and writes both results to OUT (JSON).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from llava_ckd.engines import shard_layers
from tests.train.sharded_step import Step

LAYERS = {"Qwen2DecoderLayer", "CLIPEncoderLayer"}


def main(data: Path, tokenizer_dir: Path, out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    step = Step.build(data, tokenizer_dir, world)
    student, teacher = step.student, step.teacher
    shard_layers(student, LAYERS)
    fully_shard(student)
    shard_layers(teacher, LAYERS)

    result = step.loss(student, teacher, step.halves[rank])
    (result.loss * world).backward()  # FSDP averages gradients over processes; the counts are already global
    loss = result.loss.detach().clone()
    dist.all_reduce(loss)
    gradients = {name: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad)
                 for name, p in student.named_parameters() if p.grad is not None}
    teacher_layers = teacher.model.language_model.layers.parameters()
    if rank == 0:
        step.write_comparison(out, loss.item(), gradients,
                              teacher_layers_sharded=all(isinstance(p, DTensor) for p in teacher_layers),
                              teacher_head_whole=not isinstance(teacher.lm_head.weight, DTensor))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
