"""The GPU smoke benchmark's code, run at tiny width in fp32 on the CPU (the GPU path differs in device, dtype and
shapes only)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_distill.py"


@pytest.fixture(scope="module")
def gpu_distill():
    spec = importlib.util.spec_from_file_location("gpu_distill", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def figures_printed(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and " " not in line.split("=")[0])


def test_tiny_run_prints_agreeing_losses_and_positive_throughput(gpu_distill, capsys):
    returned = gpu_distill.main(["--tiny"])
    printed = figures_printed(capsys.readouterr().out)
    assert printed == returned
    for key in ("loss_rel_diff", "ce_rel_diff", "kd_rel_diff", "grad_rel_diff", "sft_tokens_per_s",
                "distill_tokens_per_s", "naive_tokens_per_s", "teacher_forward_ms", "teacher_share",
                "peak_memory_gib_distill", "peak_memory_gib_naive", "peak_memory_ratio", "step_memory_ratio"):
        assert key in printed, key
    # fp32: the fused chunked heads compute the naive full-logit loss, term by term, and its gradients
    assert float(printed["loss_rel_diff"]) < 1e-5
    assert float(printed["ce_rel_diff"]) < 1e-5
    assert float(printed["kd_rel_diff"]) < 1e-5
    assert float(printed["grad_rel_diff"]) < 1e-4
    assert float(printed["kd_naive"]) > 0
    for key in ("sft_tokens_per_s", "distill_tokens_per_s", "naive_tokens_per_s"):
        assert float(printed[key]) > 0, key
    assert float(printed["teacher_share"]) > 0
    assert printed["peak_memory_ratio"] == "n/a"  # no CUDA allocator to ask on the CPU


def test_loss_check_catches_a_wrong_vocabulary(gpu_distill):
    """The agreement check can fail: the naive loss over the padded head rows differs from the Distiller's."""
    profile = gpu_distill.TINY
    student = gpu_distill.build_vlm(gpu_distill.STUDENT_LLM, profile, tiny=True, seed=0)
    teacher = gpu_distill.build_vlm(gpu_distill.TEACHER_LLM, profile, tiny=True, seed=1)
    gpu_distill.set_trainable(student, ("projector", "llm"))
    distiller = gpu_distill.Distiller(gpu_distill.OnlineTeacher(teacher), gpu_distill.loss_terms({}),
                                      gpu_distill.DivergenceSpec(name="forward_kl"), gpu_distill.TOKENIZER_LEN)
    batch = gpu_distill.synthetic_batch(profile, student.config.image_seq_length, seed=0)
    padded_rows = student.lm_head.weight.shape[0]
    check = gpu_distill.compare_losses(student, distiller, teacher, batch, vocab_size=padded_rows)
    assert check["loss_rel_diff"] > 1e-5


def test_synthetic_batch_is_shaped_like_llava_sft(gpu_distill):
    profile = gpu_distill.Profile("cpu", torch.float32, batch_size=4, seq_len=1024, image_size=384, steps=1,
                                  warmup=0, naive_steps=1)
    batch = gpu_distill.synthetic_batch(profile, image_tokens=729, seed=0)
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 1024)
    assert batch["pixel_values"].shape == (4, 3, 384, 384)
    assert ((batch["input_ids"] == gpu_distill.IMAGE_TOKEN_ID).sum(1) == 729).all()
    labelled = batch["labels"] != -100
    assert not (labelled & (batch["input_ids"] == gpu_distill.IMAGE_TOKEN_ID)).any()
    text = 1024 - 729 - gpu_distill.PREFIX_TOKENS
    assert 0.3 < labelled.sum() / (4 * text) < 0.7


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no GPU is")
def test_gpu_run_without_cuda_says_what_is_missing(gpu_distill):
    with pytest.raises(SystemExit, match="CUDA"):
        gpu_distill.main([])


def test_a_variant_out_of_memory_is_reported_not_raised(gpu_distill):
    def step(batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.64 GiB")

    run = gpu_distill.timed(step, [{}], warmup=1, steps=2, device="cpu")
    assert run.seconds is None and run.peak_bytes is None
    assert gpu_distill._ratio(run, gpu_distill.Run(seconds=1.0, steps=2), gpu_distill._step_seconds) == "n/a"

    def broken(batch):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        gpu_distill.timed(broken, [{}], warmup=1, steps=2, device="cpu")
