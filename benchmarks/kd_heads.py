"""Response-token KD (or SFT's cross-entropy) from hidden states: chunked fused heads vs. full logits, on CPU.

Shapes are Qwen2.5-0.5B's: 151,936 head rows, 151,665 tokenizer tokens, hidden 896, and 2,048
response tokens; fp32. ``--loss kd`` (default): forward KL at τ=1 (LLaVA-KD's loss); one step is the
two heads' matmuls, the KD loss and the backward pass to the Student's hidden states and head weight.
``--loss ce``: the Student's cross-entropy over its whole head (what pretrain and SFT stages compute).

  naive    full logits [N, V] (of both models for KD), then the loss; autograd for the rest
  chunked  ``heads.head_kd_loss`` (``heads.fused_head_loss`` for CE): head matmuls on chunk_size rows at
           a time, the loss on loss_chunk_size rows at a time, gradients computed in the forward

chunk_size 256 keeps the head matmuls about as fast as the naive single ones on this CPU (each
chunk re-reads the 0.5 GiB head weight: 32 rows took ~1.4x naive, 128 ~1.1-1.5x); the loss's
softmax intermediates are 16 rows x 151,665 x 4 B = 9.7 MB each.

Memory is measured by the operating system, so nothing the allocators do is hidden: every step
runs in its own fresh subprocess, which builds the inputs, warms up on a few tokens, resets the
kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs resets VmHWM; Linux only), takes
VmRSS as the baseline, runs one step and reads VmHWM. The peak delta is everything the step held
at its worst moment, the Student head's gradient (0.51 GiB) included; the largest over the
repeats is reported. Time is the median wall time of the steps. The variants' subprocesses
alternate, so that load from other processes on the machine hits both alike; the CPU time
(all threads, user + system) is printed as well, being less sensitive to that load.

Usage: python benchmarks/kd_heads.py [--loss kd|ce] [--chunk-size 256] [--loss-chunk-size 16] [--repeats 3]
       [--tokens 2048]
The last two lines printed are ``peak_memory_ratio=<float>`` and ``time_ratio=<float>``
(chunked / naive; the goals are ≤ 0.15 and ≤ 1.2).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.heads import fused_head_loss, head_kd_loss

HEAD_ROWS, VOCAB = 151_936, 151_665
SPEC = DivergenceSpec(name="forward_kl")


def make_inputs(tokens: int, student_dim: int, teacher_dim: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "student_hidden": torch.randn(tokens, student_dim, generator=generator).requires_grad_(),
        "student_head_weight": (torch.randn(HEAD_ROWS, student_dim, generator=generator) * 0.02).requires_grad_(),
        "teacher_hidden": torch.randn(tokens, teacher_dim, generator=generator),
        "teacher_head_weight": torch.randn(HEAD_ROWS, teacher_dim, generator=generator) * 0.02,
        "labels": torch.randint(0, VOCAB, (tokens,), generator=generator),
    }


def naive_step(inputs: dict[str, torch.Tensor]) -> None:
    student_logits = inputs["student_hidden"] @ inputs["student_head_weight"][:VOCAB].T
    with torch.no_grad():
        teacher_logits = inputs["teacher_hidden"] @ inputs["teacher_head_weight"][:VOCAB].T
    SPEC(student_logits, teacher_logits).sum().backward()


def chunked_step(inputs: dict[str, torch.Tensor], chunk_size: int, loss_chunk_size: int) -> None:
    kd_inputs = {name: tensor for name, tensor in inputs.items() if name != "labels"}
    head_kd_loss(
        **kd_inputs, spec=SPEC, vocab_size=VOCAB, chunk_size=chunk_size, loss_chunk_size=loss_chunk_size
    ).loss.backward()


def naive_ce_step(inputs: dict[str, torch.Tensor]) -> None:
    logits = inputs["student_hidden"] @ inputs["student_head_weight"].T
    F.cross_entropy(logits, inputs["labels"], reduction="sum").backward()


def chunked_ce_step(inputs: dict[str, torch.Tensor], chunk_size: int, loss_chunk_size: int) -> None:
    fused_head_loss(
        inputs["student_hidden"], inputs["student_head_weight"], HEAD_ROWS, chunk_kd=None, chunk_size=chunk_size,
        loss_chunk_size=loss_chunk_size, labels=inputs["labels"],
    ).loss.backward()


def make_step(variant: str, args: argparse.Namespace) -> Callable[[dict[str, torch.Tensor]], None]:
    if variant == "naive":
        return naive_step if args.loss == "kd" else naive_ce_step
    chunked = chunked_step if args.loss == "kd" else chunked_ce_step
    return functools.partial(chunked, chunk_size=args.chunk_size, loss_chunk_size=args.loss_chunk_size)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def measure(variant: str, args: argparse.Namespace) -> dict[str, float]:
    """Runs in a fresh subprocess: one step's peak RSS delta (GiB) and wall time (s).

    A step on the first 16 tokens warms the libraries up first (threads, kernels), untimed.
    """
    step = make_step(variant, args)
    inputs = make_inputs(args.tokens, args.student_dim, args.teacher_dim)
    warm_up = {name: tensor if "head_weight" in name else tensor[:16] for name, tensor in inputs.items()}
    step(warm_up)
    for tensor in inputs.values():
        tensor.grad = None
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    baseline_kib = _status_kib("VmRSS")
    start, start_cpu = time.perf_counter(), time.process_time()
    step(inputs)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return {"peak_gib": (_status_kib("VmHWM") - baseline_kib) / 2**20, "time_s": seconds, "cpu_s": cpu_seconds}


def run_in_subprocess(variant: str, args: argparse.Namespace) -> dict[str, float]:
    shape_arguments = [
        f"--{name.replace('_', '-')}={getattr(args, name)}"
        for name in ("loss", "tokens", "student_dim", "teacher_dim", "chunk_size", "loss_chunk_size")
    ]
    command = [sys.executable, __file__, "--measure", variant, *shape_arguments]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loss", choices=["kd", "ce"], default="kd")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--student-dim", type=int, default=896)
    parser.add_argument("--teacher-dim", type=int, default=896)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--loss-chunk-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args)))
        return

    print(
        f"loss={args.loss} tokens={args.tokens} head_rows={HEAD_ROWS} vocab={VOCAB} student_dim={args.student_dim} "
        f"teacher_dim={args.teacher_dim} chunk_size={args.chunk_size} loss_chunk_size={args.loss_chunk_size} "
        f"repeats={args.repeats} fp32 threads={torch.get_num_threads()}"
    )
    runs = {"naive": [], "chunked": []}
    for _ in range(args.repeats):  # alternated, so that load from other processes hits both alike
        for variant, results in runs.items():
            results.append(run_in_subprocess(variant, args))
    summary = {}
    for variant, results in runs.items():
        peak_gib = max(result["peak_gib"] for result in results)
        seconds = statistics.median(result["time_s"] for result in results)
        cpu_seconds = statistics.median(result["cpu_s"] for result in results)
        all_seconds = ", ".join(f"{result['time_s']:.2f}" for result in results)
        print(
            f"{variant:8s} peak_memory={peak_gib:.3f} GiB  time={seconds:.2f} s (median of {all_seconds})  "
            f"cpu_time={cpu_seconds:.2f} s"
        )
        summary[variant] = peak_gib, seconds
    print(f"peak_memory_ratio={summary['chunked'][0] / summary['naive'][0]:.4f}")
    print(f"time_ratio={summary['chunked'][1] / summary['naive'][1]:.4f}")


if __name__ == "__main__":
    main()
