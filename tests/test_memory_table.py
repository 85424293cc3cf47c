"""scripts/memory_table.py lays out plan/memory.py's rules for the paper's models; docs/memory.md holds its output."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from llava_ckd.plan.memory import ENGINES, activations, model_states, working_copies

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "memory_table.py"
spec = importlib.util.spec_from_file_location("memory_table", SCRIPT)
memory_table = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = memory_table  # dataclasses look their module up there
spec.loader.exec_module(memory_table)

GPUS = memory_table.GPUS


def states(stage, engine):
    model = memory_table.shape(stage.trained)
    return {name: term.bytes for name, term in model_states(model, stage.step(False), engine, GPUS).items()}


@pytest.mark.parametrize("stage", memory_table.STAGES, ids=lambda s: s.name)
def test_engine_arithmetic_hangs_together(stage):
    by_engine = {engine: states(stage, engine) for engine in ENGINES}
    trained = memory_table.shape(stage.trained).count(memory_table.TRAINED)
    assert by_engine["ddp"]["trained"] == 16 * trained
    assert by_engine["zero3"]["trained"] * GPUS == pytest.approx(by_engine["ddp"]["trained"])
    assert by_engine["fsdp"]["trained"] == pytest.approx(by_engine["zero3"]["trained"])
    assert by_engine["zero3"]["trained"] < by_engine["zero2"]["trained"] < by_engine["ddp"]["trained"]
    vision = memory_table.shape(stage.trained).parts["vision"]
    assert [by_engine[e]["frozen"] for e in ENGINES] == pytest.approx([4 * vision, 2 * vision, 2 * vision / 8,
                                                                      4 * vision / 8])
    for checkpointing in (False, True):
        totals = {e: memory_table.stage_total(stage, e, checkpointing) for e in ENGINES}
        assert totals["zero3"] <= totals["zero2"] <= totals["ddp"]
    assert memory_table.stage_total(stage, "ddp", True) < memory_table.stage_total(stage, "ddp", False)


@pytest.mark.parametrize("stage", [s for s in memory_table.STAGES if s.teacher], ids=lambda s: s.name)
def test_online_teacher_is_bf16_and_placed_as_engines_py_places_it(stage):
    teacher = memory_table.shape(stage.teacher)
    terms = {engine: states(stage, engine)["teacher"] for engine in ENGINES}
    assert terms["ddp"] == terms["zero2"] == 2 * teacher.total  # replicated
    assert terms["zero3"] == pytest.approx(2 * teacher.total / 8)  # partitioned
    # FSDP2 shards its layers; embeddings, LM head, projector and vision embeddings stay whole on every GPU
    siglip_layer = 4 * (1152 * 1152 + 1152) + 2 * (1152 * 4304) + 4304 + 1152 + 2 * 2 * 1152  # attn, MLP, 2 norms
    layers = teacher.layers * teacher.decoder_layer + 27 * siglip_layer
    assert teacher.total == pytest.approx(teacher.fsdp_root + layers)
    assert terms["fsdp"] == pytest.approx(2 * layers / 8 + 2 * teacher.fsdp_root)
    model = memory_table.shape(stage.trained)
    for engine in ("zero3", "fsdp"):  # gathered layers while it runs
        assert working_copies(model, stage.step(True), engine, GPUS)["teacher gathered"].bytes > 0


def test_paper_activation_and_logit_estimates():
    student = memory_table.shape("0.5B")
    online = memory_table.STAGE["Student 0.5B DFT ← Teacher 7B (online)"]
    a = activations(student, online.step(False))
    assert a["layers"].bytes == 24 * 2 * (6 * 896 + 2 * 128 + 4 * 4864) * 16 * 2048
    # fused: a chunk per model + the Student head's fp32 gradient for response KD and for visual-token KD
    assert a["heads"].bytes == 4 * (2 * 256 * 151_665 + 2 * 151_936 * 896)
    sft = memory_table.STAGE["Teacher 7B SFT"]
    assert activations(memory_table.shape("7B"), sft.step(False))["heads"].bytes == 4 * (256 * 152_064
                                                                                          + 152_064 * 3584)
    assert memory_table.shape("7B").largest_module == 152_064 * 3584  # embedding and head, the largest ZeRO-3 gather


def test_marks_entries_over_80_gb():
    assert memory_table.mark(79.96e9) == "80.0"
    assert memory_table.mark(80.04e9) == "**80.0** ✗"  # the flag goes by the value, not by its rounding
    assert memory_table.mark(80.6e9) == "**80.6** ✗"


def test_doc_holds_the_current_output_of_the_module():
    """Fails when plan/memory.py's rules (or the shapes) change and docs/memory.md was not regenerated."""
    doc = memory_table.DOC.read_text()
    generated = doc.split(memory_table.BEGIN, 1)[1].split(memory_table.END, 1)[0]
    assert generated == "\n" + memory_table.render(), "docs/memory.md is stale: run scripts/memory_table.py --write"


def test_write_replaces_only_the_generated_part(tmp_path):
    doc = tmp_path / "memory.md"
    doc.write_text(f"intro\n{memory_table.BEGIN}\nold\n{memory_table.END}\noutro\n")
    memory_table.write(doc)
    assert doc.read_text() == f"intro\n{memory_table.BEGIN}\n{memory_table.render()}{memory_table.END}\noutro\n"
