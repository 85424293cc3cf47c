"""Predicted vs measured memory of one real distill step: `llava_ckd.plan.memory`'s activation and KD-head
estimates against what the step adds to the process's peak resident memory, on the CPU, at two small shapes.

The step is the paper's DFT step as the package runs it: a LLaVA Student (SigLIP tower frozen, projector + Qwen2
LLM training, fp32) with an online Teacher (`OnlineTeacher`), `Distiller` with CE + response KD + visual-token KD +
relation KD through the chunked fused heads, then backward. Both LLMs have Qwen2.5's 151,936-row heads; widths and
depths are small so that a step takes seconds on one core. The batch is `gpu_distill.synthetic_batch`'s.

Measured, each shape in a fresh process (glibc told to map every block over 128 KiB on its own, so that freed
tensors leave the resident set): one warm-up step on the same batch (lazy initialisation, then its gradients are
dropped), then VmHWM is reset (/proc/self/clear_refs) and read after the forward + loss (forward peak) and after
backward (step peak), each minus the resident set before the step. Predicted: the forward peak is the activations
+ the Teacher's forward + the KD heads' buffers of `plan.memory.activations`; the step peak adds the fp32
gradients of what trains (4 bytes each), all "as if live at once", as the plan counts them.

`--cuda` runs the same fp32 step on a GPU and measures `torch.cuda.max_memory_allocated` (reset after the warm-up)
above `torch.cuda.memory_allocated` before the step (scripts/gpu_smoke.sh runs it; not yet run on a GPU).

Usage: python benchmarks/plan_vs_measured.py [--cuda]     (Linux; CPU: about two minutes on one core)
Output: one line per shape: predicted, measured and the relative error, forward and whole step.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlavaForConditionalGeneration, Qwen2Config, SiglipVisionConfig

from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.terms import loss_terms
from llava_ckd.models import set_trainable
from llava_ckd.models.build import composition_config
from llava_ckd.models.published import QWEN25_SHAPES, QWEN25_TOKENIZER_TOKENS
from llava_ckd.models.shapes import count_shape
from llava_ckd.plan.memory import Step, activations

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_distill import Profile, synthetic_batch  # noqa: E402

IMAGE_TOKEN_ID = QWEN25_TOKENIZER_TOKENS
HEAD_ROWS = QWEN25_SHAPES["Qwen/Qwen2.5-0.5B-Instruct"]["vocab_size"]
TRAINED = ("projector", "llm")


@dataclass(frozen=True)
class Shape:
    name: str
    student: tuple[int, int, int]
    """hidden, intermediate, layers"""
    teacher: tuple[int, int, int]
    batch: int
    seq: int


SHAPES = (
    Shape("A", student=(256, 1024, 4), teacher=(512, 2048, 4), batch=4, seq=512),
    Shape("B", student=(384, 1536, 6), teacher=(768, 3072, 6), batch=4, seq=1024),
)
PROFILE = dict(device="cpu", dtype=torch.float32, image_size=112, steps=1, warmup=1, naive_steps=0)


def vlm_config(hidden: int, intermediate: int, layers: int):
    text = Qwen2Config(vocab_size=HEAD_ROWS, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=2,
                       tie_word_embeddings=True)
    vision = SiglipVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                                image_size=PROFILE["image_size"], patch_size=14)
    return composition_config(vision, text, IMAGE_TOKEN_ID)


def predicted(shape: Shape) -> tuple[float, float]:
    student, teacher = count_shape(vlm_config(*shape.student)), count_shape(vlm_config(*shape.teacher))
    step = Step(trained=TRAINED, batch=shape.batch, seq=shape.seq, precision="fp32", teacher=teacher,
                visual_kd=True, vocab=QWEN25_TOKENIZER_TOKENS + 1)
    forward = sum(term.bytes for term in activations(student, step).values())
    return forward, forward + 4 * student.count(TRAINED)


def resident(field: str) -> int:
    """VmRSS or VmHWM of this process, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(shape: Shape, device: str) -> tuple[float, float]:
    """(forward peak, step peak) above the memory in use before the step, bytes (run in a fresh process): the
    resident set on the CPU, `torch.cuda.max_memory_allocated` on a GPU."""
    torch.manual_seed(0)
    student = LlavaForConditionalGeneration(vlm_config(*shape.student)).to(device).train()
    set_trainable(student, TRAINED)
    teacher = OnlineTeacher(LlavaForConditionalGeneration(vlm_config(*shape.teacher)).to(device))
    distiller = Distiller(teacher, loss_terms(dict(ce=1.0, response_kd=1.0, visual_kd=1.0, relation_kd=1.0)),
                          DivergenceSpec(), QWEN25_TOKENIZER_TOKENS + 1)
    profile = Profile(batch_size=shape.batch, seq_len=shape.seq, **PROFILE | {"device": device})
    batch = synthetic_batch(profile, student.config.image_seq_length, seed=0)
    distiller(student, batch).loss.backward()  # warm-up
    student.zero_grad(set_to_none=True)
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        loss = distiller(student, batch).loss
        torch.cuda.synchronize()
        forward = torch.cuda.max_memory_allocated() - before
        loss.backward()
        torch.cuda.synchronize()
        return forward, torch.cuda.max_memory_allocated() - before
    before = resident("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    loss = distiller(student, batch).loss
    forward = resident("VmHWM") - before
    loss.backward()
    return forward, resident("VmHWM") - before


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        print(json.dumps(measure(next(s for s in SHAPES if s.name == sys.argv[2]), sys.argv[3])))
        return
    device = "cuda" if sys.argv[1:] == ["--cuda"] else "cpu"
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                                                                "1")}
    print(f"{device}, shape: Student (hidden, MLP, layers) / Teacher, batch × tokens: predicted / measured MB "
          "(error), forward + loss; whole step")
    for shape in SHAPES:
        result = subprocess.run([sys.executable, __file__, "--measure", shape.name, device], env=env, check=True,
                                capture_output=True, text=True)
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        cells = []
        for predicted_bytes, measured_bytes in zip(predicted(shape), measured, strict=True):
            error = (predicted_bytes - measured_bytes) / measured_bytes
            cells.append(f"{predicted_bytes / 1e6:,.0f} / {measured_bytes / 1e6:,.0f} MB ({error:+.0%})")
        print(f"{shape.name}: {shape.student} / {shape.teacher}, {shape.batch} × {shape.seq}: {cells[0]}; {cells[1]}")


if __name__ == "__main__":
    main()
