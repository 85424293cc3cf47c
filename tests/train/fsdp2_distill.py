"""One distill step with the Student and the online Teacher sharded by FSDP2, against the same step unsharded.

Run by `test_fsdp2.py` as `torchrun --nproc_per_node 2 -m tests.train.fsdp2_distill DATA TOKENIZER OUT`:
every process takes its half of a batch of 8; the Student is sharded as accelerate's FSDP2 plugin does it
(each decoder/encoder layer, then the root), the Teacher by `engines.shard_layers` (layers only). Process 0
also runs the whole batch through unsharded copies and writes both results to OUT (JSON).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import AutoTokenizer

from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.engines import shard_layers
from llava_ckd.distill.loss import Distiller, LossWeights, TargetCounts
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.models import build_preset, set_trainable
from tests.distill.conftest import collate, load_dataset

BATCH = 8
LAYERS = {"Qwen2DecoderLayer", "CLIPEncoderLayer"}
WEIGHTS = LossWeights(ce=1.0, response_kd=1.0, visual_kd=0.5, relation_kd=0.5)


def full_gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).detach().clone()
            for name, p in model.named_parameters() if p.grad is not None}


def main(data: Path, tokenizer_dir: Path, out: Path) -> None:
    dist.init_process_group("gloo")
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

    shard_layers(student, LAYERS)
    fully_shard(student)
    shard_layers(teacher, LAYERS)
    teacher_layers_sharded = all(isinstance(p, DTensor) for p in teacher.model.language_model.layers.parameters())
    teacher_head_whole = not isinstance(teacher.lm_head.weight, DTensor)

    result = Distiller(OnlineTeacher(teacher), WEIGHTS, spec, len(tokenizer))(student, halves[rank], counts)
    (result.loss * world).backward()  # FSDP averages gradients over processes; the counts are already global
    loss = result.loss.detach().clone()
    dist.all_reduce(loss)
    gradients = full_gradients(student)

    if rank == 0:
        ref_student, ref_teacher = reference
        whole = collate(dataset, processor, range(BATCH))
        expected = Distiller(OnlineTeacher(ref_teacher), WEIGHTS, spec, len(tokenizer))(ref_student, whole, counts)
        expected.loss.backward()
        expected_gradients = full_gradients(ref_student)
        out.write_text(json.dumps({
            "loss": loss.item(),
            "expected_loss": expected.loss.item(),
            "gradient_names": sorted(gradients) == sorted(expected_gradients),
            "largest_gradient": max(g.abs().max().item() for g in expected_gradients.values()),
            "largest_gradient_difference": max((gradients[name] - g).abs().max().item()
                                               for name, g in expected_gradients.items()),
            "teacher_layers_sharded": teacher_layers_sharded,
            "teacher_head_whole": teacher_head_whole,
        }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
