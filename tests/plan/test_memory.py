"""The byte rules and activation estimates of plan/memory.py against cases worked by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llava_ckd.models.shapes import ModelShape
from llava_ckd.plan.memory import (
    ENGINES,
    Step,
    activations,
    model_states,
    smallest_change,
    total,
    working_copies,
)

# A made-up model with round numbers: 100 vision, 10 projector, 1,000 LLM parameters (tied head of 50 rows × 8)
MODEL = ModelShape(parts={"vision": 100, "projector": 10, "llm": 1_000}, input_embedding=400, hidden=8, kv_hidden=2,
                   intermediate=20, layers=3, head_rows=50, tied=True, vision_hidden=4, vision_layers=2,
                   image_tokens=5, vision_patches=5, vision_attended=10, projector_input=4, projector_hidden=8,
                   image_assumption=None, largest_module=400, decoder_layer=150, fsdp_root=480,
                   fsdp_root_trained={"vision": 60, "projector": 10, "llm": 410}, fsdp_unit=150)
TEACHER = replace(MODEL, parts={"vision": 100, "projector": 20, "llm": 3_000}, hidden=16, intermediate=40,
                  largest_module=800, fsdp_root=900, fsdp_unit=300)
SFT = Step(trained=("projector", "llm"), batch=2, seq=10)


def states(step, engine, gpus=4):
    return {name: term.bytes for name, term in model_states(MODEL, step, engine, gpus).items()}


def test_model_states_by_engine():
    psi = 1_010  # projector + LLM
    assert states(SFT, "ddp") == {"trained": 16 * psi, "frozen": 4 * 100, "teacher": 0}
    assert states(SFT, "zero2") == {"trained": 2 * psi + 14 * psi / 4, "frozen": 2 * 100, "teacher": 0}
    assert states(SFT, "zero3") == {"trained": 16 * psi / 4, "frozen": 2 * 100 / 4, "teacher": 0}
    assert states(SFT, "fsdp") == {"trained": 16 * psi / 4, "frozen": 4 * 100 / 4, "teacher": 0}
    # fp32 under ZeRO-2: fp32 weights replicated, gradients and AdamW partitioned
    assert states(replace(SFT, precision="fp32"), "zero2")["trained"] == 4 * psi + 12 * psi / 4
    # projector only (DPT): the LLM is frozen storage
    assert states(replace(SFT, trained=("projector",)), "ddp") == {"trained": 160, "frozen": 4 * 1_100, "teacher": 0}


def test_online_teacher_placement():
    step = replace(SFT, teacher=TEACHER)
    teacher = 3_120
    assert [states(step, e)["teacher"] for e in ENGINES] == [2 * teacher, 2 * teacher, 2 * teacher / 4,
                                                             2 * (teacher - 900) / 4 + 2 * 900]
    assert states(replace(step, precision="fp32"), "ddp")["teacher"] == 4 * teacher


def test_working_copies_by_engine():
    def working(step, engine, gpus=4):
        return sum(term.bytes for term in working_copies(MODEL, step, engine, gpus).values())

    # DDP: fp32 buckets 4 × 1,010 + bf16 autocast copies of projector + LLM (tied: nothing left out)
    assert working(SFT, "ddp") == 4 * 1_010 + 2 * 1_010
    # checkpointed: the decoder layers' copies only for one of the 3 layers
    assert working(replace(SFT, checkpointing=True), "ddp") == 4 * 1_010 + 2 * (1_010 - 2 * 150)
    assert working(SFT, "ddp", gpus=1) == 2 * 1_010  # one process: no DDP buckets
    assert working(replace(SFT, precision="fp32"), "ddp", gpus=1) == 0  # no autocast
    assert working(SFT, "zero2") == 2 * 1_010
    assert working(SFT, "zero3") == 4 * 400
    assert working(SFT, "fsdp") == 2 * (480 + 10 + 410 + 3 * 150)
    online = replace(SFT, teacher=TEACHER)
    assert working(online, "zero3") == 4 * 400 + 2 * 800
    assert working(online, "fsdp") == 2 * (480 + 420 + 3 * 150) + 4 * 300


def test_activations_and_kd_heads():
    tokens = 20  # 2 samples × 10 tokens
    per_layer = 2 * (6 * 8 + 2 * 2 + 4 * 20)  # 264 B per token in bf16
    a = {name: term.bytes for name, term in activations(MODEL, SFT).items()}
    assert a["layers"] == 3 * per_layer * tokens
    assert a["projector"] == 2 * 5 * 2 * (4 + 2 * 8)  # 10 image tokens × bf16 × (vision width + 2 d)
    assert a["teacher forward"] == 0
    assert a["heads"] == 4 * (256 * 50 + 50 * 8)  # SFT: one fp32 chunk over every row + the head's gradient
    ckpt = activations(MODEL, replace(SFT, checkpointing=True))["layers"].bytes
    assert ckpt == 3 * 2 * 8 * tokens + per_layer * tokens
    fp32 = activations(MODEL, replace(SFT, precision="fp32"))["layers"].bytes
    assert fp32 == 2 * a["layers"]
    online = {n: t.bytes for n, t in activations(MODEL, replace(SFT, teacher=TEACHER, visual_kd=True, vocab=45,
                                                                chunk=16)).items()}
    assert online["teacher forward"] == 2 * tokens * (16 + 3 * 40)
    own = activations(MODEL, replace(SFT, teacher=TEACHER, teacher_seq=7))["teacher forward"].bytes
    assert own == 2 * (2 * 7) * (16 + 3 * 40)  # the Teacher's own tokens per sample (other image tokens)
    assert online["heads"] == 4 * (2 * 16 * 45 + 2 * 50 * 8)  # two models' chunks, two calls' head gradients
    cached = activations(MODEL, replace(SFT, cached=True, vocab=45))["heads"].bytes
    assert cached == 4 * (256 * 45 + 50 * 8)
    frozen_llm = activations(MODEL, replace(SFT, trained=("projector",), cached=True, vocab=45))["heads"].bytes
    assert frozen_llm == 4 * 256 * 45  # no head gradient when the LLM is frozen


def test_the_smallest_change_that_fits():
    step = replace(SFT, batch=8, seq=1_000)
    need = total(MODEL, step, "ddp", 4)
    ckpt = total(MODEL, replace(step, checkpointing=True), "ddp", 4)
    assert ckpt < need
    change = smallest_change(MODEL, step, "ddp", 4, grad_accum=2, budget=ckpt)
    assert (change.engine, change.checkpointing, change.batch) == ("ddp", True, 8)
    # checkpointing alone is not enough (2.57 MB at batch 8); batch 1 alone is (0.87 MB), with 8 × the accumulation
    change = smallest_change(MODEL, step, "ddp", 4, grad_accum=2, budget=1.0e6)
    assert (change.engine, change.checkpointing, change.batch, change.grad_accum) == ("ddp", False, 1, 16)
    # below every single lever: two of them
    one_lever = min([total(MODEL, replace(step, batch=b), "ddp", 4) for b in (4, 2, 1)]
                    + [ckpt] + [total(MODEL, step, e, 4) for e in ENGINES[1:]])
    change = smallest_change(MODEL, step, "ddp", 4, grad_accum=2, budget=one_lever - 1)
    levers = (change.engine != "ddp") + change.checkpointing + (change.batch != 8)
    assert levers == 2 and change.bytes < one_lever
    assert smallest_change(MODEL, step, "ddp", 4, grad_accum=2, budget=10) is None


@pytest.mark.parametrize("engine", ENGINES)
def test_every_term_states_its_arithmetic(engine):
    step = replace(SFT, teacher=TEACHER, visual_kd=True)
    for term in [*model_states(MODEL, step, engine, 4).values(), *working_copies(MODEL, step, engine, 4).values(),
                 *activations(MODEL, step).values()]:
        assert term.formula
