"""GPU smoke benchmark: bf16 distill steps of a LLaVA Student (Qwen2.5-0.5B shape) from a 1.5B-shaped Teacher.

Both VLMs are SigLIP-so400m-384 + 2-layer GELU projector + Qwen2.5 LLM at the published shapes
(`models/published.py`), randomly initialised straight on the GPU in bf16: nothing is downloaded.
The Student trains projector + LLM (vision tower frozen, as in the paper's KD stages) with AdamW
(bf16 parameters and optimizer states, no fp32 master copy); the Teacher is an `OnlineTeacher`.
Batches are synthetic and shaped like LLaVA-665K SFT: one image (729 image tokens at 384 px)
after a short system prefix, then 1-4 question/answer turns filling the rest of the sequence,
about half of the text positions being response labels; every row has the full length (no padding).

A step is forward, loss, backward and the optimizer step. Variants, timed over the same batches:

  sft      CE only, through the fused head over the Student's whole head (what the SFT stage runs)
  distill  `Distiller`: CE + response KD (forward KL, τ=1) with the chunked fused LM heads
  naive    both models' full logits [B, L, V] from their forward passes, then CE + forward KL at the
           response positions gathered from them (the cheapest version that still materialises
           [B, L, V]: like `kd_heads.py`'s naive path, the divergence runs on the response rows only)

Figures: tokens/s (all B·L positions, image tokens included) over the timed steps, warm-up steps
excluded, with `torch.cuda.synchronize()` around the timed loop; the Teacher's share of a distill
step (its forward pass timed alone on the same batches over the distill step's time); peak GPU
memory of each variant (`torch.cuda.max_memory_allocated`, reset after warm-up) in total and above
what stays resident between steps (weights and AdamW states); the chunked/naive ratios; and the
relative difference of the chunked and naive losses and gradients on the same batch and weights.
An out-of-memory variant is reported as such and the other figures still come out.

`--tiny` runs the same code on the CPU in fp32 at tiny width (`tiny=True` configs: same classes,
same 151,936-row heads) with small images and batches, for the tests; CPU memory is reported as n/a.

Usage: python benchmarks/gpu_distill.py [--tiny] [--batch-size 8] [--seq-len 1024] [--steps 10]
Output: a short header, then one ``name=value`` per line.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn
from transformers import LlavaForConditionalGeneration

from llava_ckd.data.conversations import IGNORE_INDEX
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller, LossTerms
from llava_ckd.distill.positions import model_inputs, next_token_targets, response_mask
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.terms import loss_terms
from llava_ckd.distill.vocab import shared_vocab_size
from llava_ckd.models import published, set_trainable

STUDENT_LLM = "Qwen/Qwen2.5-0.5B-Instruct"
TEACHER_LLM = "Qwen/Qwen2.5-1.5B-Instruct"
IMAGE_TOKEN_ID = published.QWEN25_TOKENIZER_TOKENS
"""`<image>` as `compose_vlm` adds it: the first id past the Qwen2.5 tokenizer, a padded head row."""
TOKENIZER_LEN = published.QWEN25_TOKENIZER_TOKENS + 1  # with <image>
PREFIX_TOKENS = 8
"""System-prompt tokens before the image."""


@dataclass(frozen=True)
class Profile:
    device: str
    dtype: torch.dtype
    batch_size: int
    seq_len: int
    image_size: int
    steps: int
    warmup: int
    naive_steps: int


GPU = Profile("cuda", torch.bfloat16, batch_size=8, seq_len=1024, image_size=384, steps=10, warmup=3, naive_steps=3)
TINY = Profile("cpu", torch.float32, batch_size=2, seq_len=48, image_size=56, steps=1, warmup=1, naive_steps=1)


def build_vlm(llm: str, profile: Profile, tiny: bool, seed: int) -> LlavaForConditionalGeneration:
    """SigLIP-so400m + `llm` at the published shapes (or tiny width), random init, on the device."""
    config = published.llava_config(published.SIGLIP_SO400M, llm, IMAGE_TOKEN_ID, tiny=tiny)
    config.vision_config.image_size = profile.image_size
    config.image_seq_length = (profile.image_size // config.vision_config.patch_size) ** 2
    torch.manual_seed(seed)
    with torch.device(profile.device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=profile.dtype)
    return model


def synthetic_batch(profile: Profile, image_tokens: int, seed: int) -> dict[str, Tensor]:
    """One LLaVA-SFT-shaped batch: prefix, image tokens, then question/answer turns; labels on the answers."""
    generator = torch.Generator().manual_seed(seed)
    text = profile.seq_len - PREFIX_TOKENS - image_tokens
    if text < 4:
        raise ValueError(f"seq_len {profile.seq_len} leaves no room for text after {image_tokens} image tokens")
    input_ids = torch.randint(0, published.QWEN25_TOKENIZER_TOKENS, (profile.batch_size, profile.seq_len),
                              generator=generator)
    input_ids[:, PREFIX_TOKENS:PREFIX_TOKENS + image_tokens] = IMAGE_TOKEN_ID
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row in range(profile.batch_size):
        turns = int(torch.randint(1, 5, (), generator=generator))
        start = PREFIX_TOKENS + image_tokens
        for turn in range(turns):
            end = start + text // turns if turn < turns - 1 else profile.seq_len
            jitter = max((end - start) // 4, 1)
            answer_start = (start + end) // 2 + int(torch.randint(-jitter, jitter, (), generator=generator))
            answer_start = min(max(answer_start, start + 1), end - 1)
            labels[row, answer_start:end] = input_ids[row, answer_start:end]
            start = end
    pixel_values = torch.randn(profile.batch_size, 3, profile.image_size, profile.image_size, generator=generator)
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pixel_values.to(profile.dtype),
        "image_token_counts": torch.full((profile.batch_size,), image_tokens),
        "labels": labels,
    }
    return {name: value.to(profile.device) for name, value in batch.items()}


def naive_loss(student: nn.Module, teacher: nn.Module, batch: dict[str, Tensor], vocab_size: int) -> LossTerms:
    """CE + forward KL from both models' full logits [B, L, V]: the Distiller's loss without the fused heads."""
    student_logits = student(**model_inputs(batch), use_cache=False).logits[..., :vocab_size]
    with torch.no_grad():
        teacher_logits = teacher(**model_inputs(batch), use_cache=False).logits[..., :vocab_size]
    positions = response_mask(batch["labels"])
    student_rows, teacher_rows = student_logits[positions], teacher_logits[positions]
    count = positions.sum().clamp(min=1)
    kd = DivergenceSpec(name="forward_kl")(student_rows, teacher_rows).sum() / count
    ce = F.cross_entropy(student_rows.float(), next_token_targets(batch["labels"])[positions], reduction="sum") / count
    return LossTerms(ce + kd, {"ce": ce.detach(), "response_kd": kd.detach()})


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Run:
    seconds: float | None = None
    """Wall time of the timed steps; None when out of memory."""
    steps: int = 0
    peak_bytes: int | None = None
    resident_bytes: int | None = None


def timed(
    step: Callable[[dict[str, Tensor]], None], batches: Sequence[dict[str, Tensor]], warmup: int, steps: int,
    device: str,
) -> Run:
    """`warmup` untimed steps, then `steps` timed ones; peak memory over the timed ones (CUDA only)."""
    run, out_of_memory = Run(steps=steps), False
    try:
        for index in range(warmup):
            step(batches[index % len(batches)])
        synchronize(device)
        if device == "cuda":
            run.resident_bytes = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for index in range(steps):
            step(batches[(warmup + index) % len(batches)])
        synchronize(device)
        run.seconds = time.perf_counter() - start
        if device == "cuda":
            run.peak_bytes = torch.cuda.max_memory_allocated()
    except RuntimeError as error:  # torch.OutOfMemoryError is one
        if not is_out_of_memory(error):
            raise
        out_of_memory = True
    if out_of_memory:  # outside the except block, so that the traceback's frames no longer hold tensors
        run = Run(steps=steps)
        free_memory(device)
    return run


def compare_losses(
    student: nn.Module, distiller: Distiller, teacher: nn.Module, batch: dict[str, Tensor], vocab_size: int
) -> dict[str, float]:
    """Chunked (Distiller) vs naive: loss, its CE and KD terms and the trainable parameters' gradients, on the
    same batch and weights; relative differences taken against the naive values."""
    parameters = [p for p in student.parameters() if p.requires_grad]
    values, grads = {}, {}
    for name, loss_fn in (
        ("chunked", lambda: distiller(student, batch)),
        ("naive", lambda: naive_loss(student, teacher, batch, vocab_size)),
    ):
        loss, terms = loss_fn()
        loss.backward()
        values[name] = {"loss": loss.item(), "ce": terms["ce"].item(), "kd": terms["response_kd"].item()}
        grads[name] = [p.grad for p in parameters]
        for p in parameters:
            p.grad = None
    difference = sum(float((a.float() - b.float()).square().sum()) for a, b in zip(*grads.values(), strict=True))
    reference = sum(float(b.float().square().sum()) for b in grads["naive"])
    chunked, naive = values["chunked"], values["naive"]
    return {
        "loss_chunked": chunked["loss"],
        "loss_naive": naive["loss"],
        "kd_chunked": chunked["kd"],
        "kd_naive": naive["kd"],
        **{f"{name}_rel_diff": _relative(chunked[key], naive[key])
           for name, key in (("loss", "loss"), ("ce", "ce"), ("kd", "kd"))},
        "grad_rel_diff": math.sqrt(difference / reference),
    }


def run_benchmark(profile: Profile, tiny: bool, seed: int = 0, out: Callable[[str], None] = print) -> dict[str, str]:
    """Builds the models, runs every measurement, prints the header and figures; returns the figures."""
    device = profile.device
    student = build_vlm(STUDENT_LLM, profile, tiny, seed)
    teacher_model = build_vlm(TEACHER_LLM, profile, tiny, seed + 1)
    set_trainable(student, ("projector", "llm"))
    student.train()
    teacher = OnlineTeacher(teacher_model)
    vocab_size = shared_vocab_size(student.lm_head.weight.shape[0], teacher_model.lm_head.weight.shape[0],
                                   TOKENIZER_LEN)
    distiller = Distiller(teacher, loss_terms(dict(ce=1.0, response_kd=1.0)), DivergenceSpec(name="forward_kl"),
                          vocab_size)
    cross_entropy = Distiller.cross_entropy(student.lm_head.weight.shape[0])
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=2e-5)
    image_tokens = student.config.image_seq_length
    batches = [synthetic_batch(profile, image_tokens, seed + index) for index in range(2)]
    tokens_per_step = profile.batch_size * profile.seq_len
    response_tokens = int(response_mask(batches[0]["labels"]).sum())

    def step_with(loss_fn: Callable[[dict[str, Tensor]], Tensor]) -> Callable[[dict[str, Tensor]], None]:
        def step(batch: dict[str, Tensor]) -> None:
            loss_fn(batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    def teacher_forward(batch: dict[str, Tensor]) -> None:
        teacher(batch)

    hardware = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    out(f"LLaVA distill step, random init: Student SigLIP-so400m + {STUDENT_LLM.split('/')[1]} shape, "
        f"Teacher SigLIP-so400m + {TEACHER_LLM.split('/')[1]} shape{' (tiny width)' if tiny else ''}")
    out(f"{hardware}, {str(profile.dtype).removeprefix('torch.')}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; batch {profile.batch_size} x {profile.seq_len} tokens "
        f"({image_tokens} image tokens, {response_tokens} response tokens in the first batch), "
        f"{profile.steps} timed steps after {profile.warmup} warm-up steps (naive: {profile.naive_steps})"
        + ("" if device == "cuda" else "; memory figures are CUDA-only (n/a here)"))

    figures: dict[str, str] = {}

    def emit(name: str, value: object) -> None:
        """Prints each figure as it comes, so that a run stopped by a time limit still shows what it measured."""
        figures[name] = str(value)
        out(f"{name}={value}")
        sys.stdout.flush()

    emit("student_params", sum(p.numel() for p in student.parameters()))
    emit("student_trainable_params", trainable)
    emit("teacher_params", sum(p.numel() for p in teacher_model.parameters()))
    emit("tokens_per_step", tokens_per_step)
    emit("response_tokens_per_step", response_tokens)

    check: dict[str, float] | None = None
    try:
        check = compare_losses(student, distiller, teacher_model, batches[0], vocab_size)
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
    if check is None:
        for p in student.parameters():
            p.grad = None
        free_memory(device)
        emit("loss_check", "out_of_memory")
    else:
        for name, value in check.items():
            emit(name, f"{value:.8g}")

    variants = {  # naive last: were it to run out of memory, it would disturb nothing after it
        "sft": (step_with(lambda batch: cross_entropy(student, batch).loss), profile.warmup, profile.steps),
        "distill": (step_with(lambda batch: distiller(student, batch).loss), profile.warmup, profile.steps),
        "teacher_forward": (teacher_forward, min(profile.warmup, 1), profile.steps),
        "naive": (step_with(lambda batch: naive_loss(student, teacher_model, batch, vocab_size).loss),
                  min(profile.warmup, 1), profile.naive_steps),
    }
    runs = {}
    for name, (step, warmup, steps) in variants.items():
        run = runs[name] = timed(step, batches, warmup, steps, device)
        optimizer.zero_grad(set_to_none=True)  # a step cut short by running out of memory leaves gradients
        if run.seconds is None:
            emit(f"{name}_status", "out_of_memory")
        elif name == "teacher_forward":
            emit("teacher_forward_ms", f"{run.seconds / run.steps * 1000:.1f}")
        else:
            emit(f"{name}_step_ms", f"{run.seconds / run.steps * 1000:.1f}")
            emit(f"{name}_tokens_per_s", f"{tokens_per_step * run.steps / run.seconds:.1f}")
    emit("teacher_share", _ratio(runs["teacher_forward"], runs["distill"], _step_seconds))
    emit("distill_over_sft", _ratio(runs["distill"], runs["sft"], _step_seconds))
    for name in ("sft", "distill", "naive"):
        emit(f"peak_memory_gib_{name}", _gib(runs[name].peak_bytes))
        emit(f"step_memory_gib_{name}", _gib(_step_bytes(runs[name])))
    emit("peak_memory_ratio", _ratio(runs["distill"], runs["naive"], lambda run: run.peak_bytes))
    emit("step_memory_ratio", _ratio(runs["distill"], runs["naive"], _step_bytes))
    return figures


def _relative(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference) if reference else abs(value - reference)


def _step_seconds(run: Run) -> float | None:
    return run.seconds / run.steps if run.seconds is not None else None


def _step_bytes(run: Run) -> int | None:
    """Memory a step held above what stays resident between steps (weights, AdamW states)."""
    if run.peak_bytes is None or run.resident_bytes is None:
        return None
    return run.peak_bytes - run.resident_bytes


def _ratio(numerator: Run, denominator: Run, value: Callable[[Run], float | None]) -> str:
    top, bottom = value(numerator), value(denominator)
    return f"{top / bottom:.4f}" if top is not None and bottom else "n/a"


def _gib(size: int | None) -> str:
    return f"{size / 2**30:.3f}" if size is not None else "n/a"


def profile_from(args: argparse.Namespace) -> Profile:
    base = TINY if args.tiny else GPU
    overrides = {name: getattr(args, name) for name in ("batch_size", "seq_len", "image_size", "steps", "warmup",
                                                         "naive_steps") if getattr(args, name) is not None}
    return Profile(**{**base.__dict__, **overrides})


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny width, fp32, on the CPU (for tests)")
    parser.add_argument("--batch-size", type=int, help=f"default {GPU.batch_size} ({TINY.batch_size} with --tiny)")
    parser.add_argument("--seq-len", type=int, help=f"tokens per row, image included; default {GPU.seq_len}")
    parser.add_argument("--image-size", type=int, help=f"pixels (patch 14); default {GPU.image_size}")
    parser.add_argument("--steps", type=int, help=f"timed steps per variant; default {GPU.steps}")
    parser.add_argument("--warmup", type=int, help=f"untimed steps before them; default {GPU.warmup}")
    parser.add_argument("--naive-steps", type=int, help=f"timed naive steps; default {GPU.naive_steps}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    profile = profile_from(args)
    if profile.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"gpu_distill: no CUDA device visible to this torch ({torch.__version__}); a CUDA build of torch "
                 f"and a GPU are needed, or run with --tiny for the CPU check")
    return run_benchmark(profile, args.tiny, args.seed)


if __name__ == "__main__":
    main()
