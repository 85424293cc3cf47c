"""One distill step of a tiny Student and online Teacher on 2 processes under a sharding engine, compared with
the same step on unsharded copies: the set-up and the comparison shared by fsdp2_distill.py and zero3_distill.py,
and how their tests launch them and check the result."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller, TargetCounts
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.terms import loss_terms
from llava_ckd.models import build_preset, set_trainable
from tests.distill.conftest import collate, load_dataset

BATCH = 8
WEIGHTS = loss_terms(dict(ce=1.0, response_kd=1.0, visual_kd=0.5, relation_kd=0.5))
SPEC = DivergenceSpec(name="forward_kl", temperature=2.0)
REPOSITORY = Path(__file__).resolve().parents[2]


@dataclass
class Step:
    student: nn.Module
    teacher: nn.Module
    vocab_size: int
    halves: list[dict[str, torch.Tensor]]
    """This batch of 8 as each process's half."""
    whole: dict[str, torch.Tensor]
    counts: TargetCounts
    reference: tuple[nn.Module, nn.Module]
    """Unsharded copies of Student and Teacher."""

    @classmethod
    def build(cls, data: Path, tokenizer_dir: Path, world: int) -> Step:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        student, processor = build_preset("tiny-student", tokenizer, seed=0)
        teacher, _ = build_preset("tiny-ta", tokenizer, seed=1)
        set_trainable(student, ("projector", "llm"))
        dataset = load_dataset(data, processor)
        halves = [collate(dataset, processor, range(start, start + BATCH // world))
                  for start in range(0, BATCH, BATCH // world)]
        return cls(student, teacher, len(tokenizer), halves, collate(dataset, processor, range(BATCH)),
                   TargetCounts.of_batches(halves, student.config.image_token_id),
                   (copy.deepcopy(student), copy.deepcopy(teacher)))

    def loss(self, student: nn.Module, teacher: nn.Module, batch: dict[str, torch.Tensor]):
        return Distiller(OnlineTeacher(teacher), WEIGHTS, SPEC, self.vocab_size)(student, batch, self.counts)

    def write_comparison(self, out: Path, loss: float, gradients: dict[str, torch.Tensor], **facts: bool) -> None:
        """The sharded step's loss and gradients next to those of the unsharded copies on the whole batch."""
        student, teacher = self.reference
        expected = self.loss(student, teacher, self.whole)
        expected.loss.backward()
        expected_gradients = {name: p.grad for name, p in student.named_parameters() if p.grad is not None}
        out.write_text(json.dumps(facts | {
            "loss": loss,
            "expected_loss": expected.loss.item(),
            "gradient_names": sorted(gradients) == sorted(expected_gradients),
            "largest_gradient": max(g.abs().max().item() for g in expected_gradients.values()),
            "largest_gradient_difference": max((gradients[name] - g).abs().max().item()
                                               for name, g in expected_gradients.items()),
        }))


def run_two_processes(module: str, dataset: Path, tokenizer_dir: Path, tmp_path: Path) -> dict:
    out = tmp_path / "result.json"
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2",
               "-m", module, str(dataset), str(tokenizer_dir), str(out)]
    result = subprocess.run(command, cwd=REPOSITORY, env=os.environ | {"OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def assert_equals_the_unsharded_step(measured: dict) -> None:
    assert measured["loss"] == pytest.approx(measured["expected_loss"], rel=1e-5)
    assert measured["gradient_names"]
    assert measured["largest_gradient_difference"] < 1e-6 * max(1.0, measured["largest_gradient"])
