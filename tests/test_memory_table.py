"""scripts/memory_table.py: exact parameter counts, consistent engine arithmetic, docs/memory.md in sync."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "memory_table.py"
spec = importlib.util.spec_from_file_location("memory_table", SCRIPT)
memory_table = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = memory_table  # dataclasses look their module up there
spec.loader.exec_module(memory_table)

ONLINE = [stage for stage in memory_table.STAGES if stage.teacher is not None]


@pytest.mark.parametrize(
    ("size", "card_total", "card_non_embedding"),
    [("0.5B", 0.49, 0.36), ("1.5B", 1.54, 1.31), ("3B", 3.09, 2.77), ("7B", 7.61, 6.53)],
)
def test_llm_parameters_match_the_qwen25_model_cards(size, card_total, card_non_embedding):
    """The cards state billions to two decimals (7B: 7.6156 is written 7.61), so agree within one last digit."""
    shape = memory_table.shape(size)
    embeddings = shape.input_embedding * (1 if shape.tied else 2)  # an untied head is as big as the embedding
    assert abs(shape.llm / 1e9 - card_total) < 0.01
    assert abs((shape.llm - embeddings) / 1e9 - card_non_embedding) < 0.01


def test_vision_tower_projector_and_heads():
    shapes = [memory_table.shape(size) for size in memory_table.QWEN]
    assert {s.vision for s in shapes} == {428_225_600}  # SigLIP-so400m-patch14-384's vision tower, ~0.43B
    for s in shapes:  # 2-layer GELU projector 1152 -> d -> d, with biases
        assert s.projector == 1152 * s.hidden + s.hidden + s.hidden * s.hidden + s.hidden
    assert [s.tied for s in shapes] == [True, True, True, False]
    assert [s.head_rows for s in shapes] == [151_936, 151_936, 151_936, 152_064]
    seven = memory_table.shape("7B")
    assert seven.largest_module == 152_064 * 3584  # embedding and head, the largest ZeRO-3 gather


@pytest.mark.parametrize("stage", memory_table.STAGES, ids=lambda s: s.name)
def test_engine_arithmetic_hangs_together(stage):
    states = {engine: memory_table.states(stage, engine) for engine in memory_table.ENGINES}
    trained = memory_table.shape(stage.trained).trained
    assert states["DDP"]["trained"] == 16 * trained
    assert states["ZeRO-3"]["trained"] * memory_table.GPUS == pytest.approx(states["DDP"]["trained"])
    assert states["FSDP"]["trained"] == pytest.approx(states["ZeRO-3"]["trained"])
    assert states["ZeRO-3"]["trained"] < states["ZeRO-2"]["trained"] < states["DDP"]["trained"]
    assert sum(states["ZeRO-2"].values()) <= sum(states["DDP"].values())
    # the frozen tower: fp32 under DDP and FSDP, bf16 under DeepSpeed; sharded by ZeRO-3 and FSDP
    vision = memory_table.shape(stage.trained).vision
    assert [states[e]["frozen"] for e in memory_table.ENGINES] == pytest.approx(
        [4 * vision, 2 * vision, 2 * vision / 8, 4 * vision / 8])
    for checkpointing in (False, True):
        totals = {e: memory_table.total(stage, e, checkpointing) for e in memory_table.ENGINES}
        assert totals["ZeRO-2"] <= totals["DDP"]
        assert totals["ZeRO-3"] <= totals["ZeRO-2"]
    assert memory_table.total(stage, "DDP", True) < memory_table.total(stage, "DDP", False)


@pytest.mark.parametrize("stage", ONLINE, ids=lambda s: s.name)
def test_online_teacher_is_bf16_and_placed_as_engines_py_places_it(stage):
    teacher = memory_table.shape(stage.teacher)
    terms = {engine: memory_table.states(stage, engine)["teacher"] for engine in memory_table.ENGINES}
    assert terms["DDP"] == terms["ZeRO-2"] == 2 * teacher.total  # replicated
    assert terms["ZeRO-3"] == pytest.approx(2 * teacher.total / 8)  # partitioned
    # FSDP2 shards its layers; embeddings, LM head, projector and vision embeddings stay whole on every GPU
    siglip_layer = 4 * (1152 * 1152 + 1152) + 2 * (1152 * 4304) + 4304 + 1152 + 2 * 2 * 1152  # attn, MLP, 2 norms
    layers = teacher.layers * teacher.decoder_layer + 27 * siglip_layer
    assert teacher.total == pytest.approx(teacher.fsdp_root + layers)
    assert terms["FSDP"] == pytest.approx(2 * layers / 8 + 2 * teacher.fsdp_root)
    assert terms["ZeRO-3"] < terms["FSDP"] < terms["DDP"]
    for engine in memory_table.SHARDED:  # gathered layers while it runs
        assert memory_table.working(stage, engine, True)["teacher gathered"] > 0


def test_cached_signals_remove_the_teacher_and_nothing_else():
    by_name = memory_table.STAGE
    for size in ("0.5B", "1.5B"):
        cached = by_name[f"Student {size} DFT, cached signals"]
        online = by_name[f"Student {size} DFT ← Teacher 7B (online)"]
        for engine in memory_table.ENGINES:
            c, o = memory_table.states(cached, engine), memory_table.states(online, engine)
            assert c["teacher"] == 0 and o["teacher"] > 0
            assert (c["trained"], c["frozen"]) == (o["trained"], o["frozen"])
            assert memory_table.working(cached, engine, True)["teacher gathered"] == 0
        assert memory_table.activations(cached)["teacher forward"] == 0


def test_activation_and_logit_estimates():
    student = memory_table.shape("0.5B")
    # Korthikanti-style count for the Qwen2 block: 2 x (6h + 2 h_kv + 4f) bytes per token and layer
    assert memory_table.layer_activation_bytes(student) == 2 * (6 * 896 + 2 * 128 + 4 * 4864)
    online = memory_table.activations(memory_table.STAGE["Student 0.5B DFT ← Teacher 7B (online)"])
    tokens = 16 * 2048
    assert online["logits naive"] == 4 * tokens * (151_936 + 152_064)
    # fused: a chunk per model + the Student head's fp32 gradient for response KD and for visual-token KD
    assert online["logits as run"] == 4 * (2 * 256 * 151_665 + 2 * 151_936 * 896)
    assert online["logits as run"] < online["logits naive"] / 25
    sft = memory_table.activations(memory_table.STAGE["Teacher 7B SFT"])
    # fused cross-entropy over the whole untied head: one chunk + the head's fp32 gradient
    assert sft["logits as run"] == 4 * (256 * 152_064 + 152_064 * 3584)
    half = memory_table.activations(memory_table.STAGE["Teacher 7B SFT"], seq=1024)
    assert half["layers"] == pytest.approx(sft["layers"] / 2)


def test_marks_entries_over_80_gb():
    assert memory_table.mark(79.96e9) == "80.0"
    assert memory_table.mark(80.04e9) == "**80.0** ✗"  # the flag goes by the value, not by its rounding
    assert memory_table.mark(80.6e9) == "**80.6** ✗"


def test_doc_holds_the_current_output():
    doc = memory_table.DOC.read_text()
    generated = doc.split(memory_table.BEGIN, 1)[1].split(memory_table.END, 1)[0]
    assert generated == "\n" + memory_table.render(), "docs/memory.md is stale: run scripts/memory_table.py --write"


def test_write_replaces_only_the_generated_part(tmp_path):
    doc = tmp_path / "memory.md"
    doc.write_text(f"intro\n{memory_table.BEGIN}\nold\n{memory_table.END}\noutro\n")
    memory_table.write(doc)
    assert doc.read_text() == f"intro\n{memory_table.BEGIN}\n{memory_table.render()}{memory_table.END}\noutro\n"
