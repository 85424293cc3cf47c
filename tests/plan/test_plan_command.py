"""`llava-ckd plan` and `cascade --dry-run` on a fresh clone (no data, no weights), on a recipe with data, and on
bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from llava_ckd.cli import main
from llava_ckd.data.conversations import load_conversations
from llava_ckd.models import build_preset
from llava_ckd.models.published import SIGLIP_SO400M
from llava_ckd.models.shapes import shape_of
from llava_ckd.models.source import ModelSource
from llava_ckd.plan.flops import inference_flops, training_flops
from llava_ckd.plan.tokens import assumed, count_tokens
from tests.cascade.conftest import recipe_dict, write_recipe
from tests.test_cli_errors import error_of

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper" / "ckd-qwen2.5-0.5b.yaml"
PRETRAIN = "data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json"
INSTRUCT = "data/LLaVA-Instruct/llava_v1_5_mix665k.json"
MISSING = [f"data.conversations: file not found: {PRETRAIN}",
           "data.images: folder not found: data/LLaVA-Pretrain/images",
           f"data.conversations: file not found: {INSTRUCT}",
           "data.images: folder not found: data/LLaVA-Instruct/images"]


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch):
    """A folder without the recipe's data; the hub is off, so nothing could be downloaded."""
    (tmp_path / "configs").symlink_to(PAPER.parents[1])  # the recipe by its relative path, as in a clone
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_dry_run_lists_every_stage_and_every_missing_input(fresh_clone, capsys):
    main(["cascade", str(PAPER), "--dry-run"])
    out = capsys.readouterr().out
    assert "14  bottom-up/student/dft-from-qwen2.5-7b" in out
    missing = out.split("missing inputs (4;", 1)[1]
    assert all(line in missing for line in MISSING)


def test_a_run_refuses_naming_every_missing_input(fresh_clone):
    message = error_of(["cascade", str(PAPER)])
    assert message.startswith(f"error: {PAPER}: missing input(s):")
    assert all(line in message for line in MISSING)


def test_plan_without_data_lists_stages_missing_inputs_and_gpu_hours(fresh_clone, capsys):
    out_json = fresh_clone / "plan.json"
    main(["plan", str(PAPER), "--gpus", "8", "--gpu-memory", "80", "--data", f"{PRETRAIN}=558128,60,15",
          "--data", f"{INSTRUCT}=665298,300,120", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert "missing inputs (4):" in out and all(line in out for line in MISSING)
    assert "[14] bottom-up/student/dft-from-qwen2.5-7b" in out
    assert "assumed: 665,298 samples × (300 text + 1 × 729 image tokens)" in out
    plan = json.loads(out_json.read_text())
    assert len(plan["stages"]) == 14 and all(stage["gpu_hours"] > 0 for stage in plan["stages"])
    hours = plan["plans_gpu_hours"]
    by_name = {stage["name"]: stage for stage in plan["stages"]}
    # a plan's hours are its stages' (shared Teacher stages included); the recipe counts each stage once
    assert hours["direct"] == pytest.approx(sum(by_name[name]["gpu_hours"] for name in (
        "teacher-qwen2.5-7b/dpt", "teacher-qwen2.5-7b/sft", "direct/student/dpt-from-qwen2.5-7b",
        "direct/student/sft", "direct/student/dft-from-qwen2.5-7b")))
    assert plan["recipe_gpu_hours"] == pytest.approx(sum(stage["gpu_hours"] for stage in plan["stages"]))
    assert plan["recipe_gpu_hours"] < sum(hours.values())
    assert plan["bottom_up_over_direct"] == pytest.approx(hours["bottom-up"] / hours["direct"])
    assert 1 < plan["bottom_up_over_direct"] < 2
    assert f"bottom-up / direct: {plan['bottom_up_over_direct']:.2f}×" in out
    # the 7B Teacher's SFT does not fit 80 GB under DDP (its model states alone are 122 GB): a sharding engine does
    sft = by_name["teacher-qwen2.5-7b/sft"]
    assert sft["fits"] is False and sft["memory"]["trained"]["bytes"] == 16 * 7_632_597_504
    assert sft["change"].startswith("fits with engine zero")
    assert by_name["direct/student/dft-from-qwen2.5-7b"]["parameters"]["online Teacher"] == 8_060_823_104


def test_plan_without_data_or_sizes_says_what_is_unknown(fresh_clone, capsys):
    main(["plan", str(PAPER), "--gpus", "4", "--gpu-memory", "24", "--engine", "zero3"])
    out = capsys.readouterr().out
    assert f"tokens unknown: {INSTRUCT} not there: give --data {INSTRUCT}=SAMPLES,TEXT_TOKENS" in out
    for plan in ("direct", "bottom-up", "recipe"):
        assert re.search(rf"^  {plan} +unknown ", out, re.MULTILINE)
    assert "memory per GPU (zero3, 2 × 2,048 tokens, bf16, activation checkpointing)" in out  # no tokens needed
    # 7B full fine-tuning: 16 B × 7.63e9 / 4 = 30.5 GB of states alone; 16 × 7.63e9 / 7 = 17.4 GB leaves room
    assert "no engine, checkpointing or batch fits it on 4 GPUs; it needs 7 of them (zero3, checkpointing" in out


def test_plan_counts_tokens_of_present_data_as_training_encodes_them(tmp_path, tokenizer, tokenizer_dir,
                                                                     colour_dataset, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", recipe_dict(tmp_path, tokenizer_dir, colour_dataset))
    main(["plan", str(recipe), "--gpus", "1", "--gpu-memory", "1", "--json", str(tmp_path / "plan.json")])
    plan = json.loads((tmp_path / "plan.json").read_text())
    _, processor = build_preset("tiny-student", tokenizer)
    samples, _ = load_conversations(colour_dataset, colour_dataset.parent / "images", processor, 64)
    tokens = plan["stages"][0]["tokens_per_epoch"]
    assert tokens["source"] == "counted" and tokens["samples"] == len(samples)
    assert tokens["tokens"] == sum(len(s.input_ids) for s in samples)
    assert tokens["response"] == sum(label != -100 for s in samples for label in s.labels)
    assert plan["stages"][0]["samples"] == 4 * 1  # max_steps 1 × batch 4 × 1 GPU
    estimate = count_tokens(colour_dataset, processor.tokenizer, 16, 64, sample=16)
    assert estimate.source.startswith("estimated from 16 of 64 records, ±")
    assert estimate.samples == pytest.approx(64)


def test_bad_input_gets_one_error_line_naming_it(fresh_clone, tmp_path):
    assert error_of(["plan", str(PAPER), "--engine", "zero4"]) == (
        "error: --engine: unknown engine 'zero4'; known: ddp, zero2, zero3, fsdp")
    assert error_of(["plan", str(PAPER), "--data", "x.json=12"]).startswith("error: --data: '12' is not SAMPLES,")
    assert error_of(["plan", str(PAPER), "--data", "x.json=12,3"]).startswith(
        f"error: --data: x.json: no stage of {PAPER} reads it; the data files are {INSTRUCT}, {PRETRAIN}")
    invalid = yaml.safe_load(PAPER.read_text())
    invalid["stages"][0]["batch_size"] = 0
    path = write_recipe(tmp_path / "invalid.yaml", invalid)
    message = error_of(["plan", str(path)])
    assert "stages.0.batch_size: Input should be greater than or equal to 1" in message
    assert message == error_of(["cascade", str(path), "--dry-run"])  # one validation, the same errors
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    unreadable = yaml.safe_load(PAPER.read_text())
    unreadable["teachers"][1]["model"] = {"path": str(broken)}
    del unreadable["teachers"][1]["capacity"]
    message = error_of(["plan", str(write_recipe(tmp_path / "unreadable.yaml", unreadable))])
    assert message.startswith(f"error: {tmp_path / 'unreadable.yaml'}: teachers.1.model: cannot read the config of "
                              f"model {broken}")


def test_cached_signals_cost_their_own_pass_and_no_teacher_memory(tmp_path, tokenizer_dir, colour_dataset):
    recipe = recipe_dict(tmp_path, tokenizer_dir, colour_dataset, plans=["direct"])
    recipe["stages"][2] |= {"signals": "cached", "top_k": 4}
    main(["plan", str(write_recipe(tmp_path / "recipe.yaml", recipe)), "--gpus", "1", "--json",
          str(tmp_path / "plan.json")])
    stages = {stage["name"]: stage for stage in json.loads((tmp_path / "plan.json").read_text())["stages"]}
    signals = stages["teacher-tiny-teacher/signals-train"]
    assert signals["summary"] == "teacher-tiny-teacher writes top-4 signals of train.json"
    assert signals["flops"] > 0 and signals["memory"] == {}
    dft = stages["direct/student/dft-from-tiny-teacher"]
    assert dft["summary"].endswith("cached signals") and "online Teacher" not in dft["parameters"]
    assert dft["memory"]["teacher"]["bytes"] == 0 and dft["memory"]["teacher forward"]["bytes"] == 0
    assert dft["memory"]["heads"]["formula"].startswith("4 × (1 × 256 × ")  # the Student's head alone


def test_a_ready_teacher_not_there_is_named_without_downloading(fresh_clone, capsys):
    recipe = yaml.safe_load(PAPER.read_text())
    recipe["teachers"][1] = {"name": "big", "model": {"path": "checkpoints/teacher"}}  # no capacity: to be counted
    path = write_recipe(fresh_clone / "ready.yaml", recipe)
    main(["cascade", str(path), "--dry-run"])
    line = ("teachers.1.model: cannot count the parameters of Teacher 'big': no config for model 'checkpoints/teacher':"
            " no such folder, nor a hub id in the local cache (nothing is downloaded)")
    assert line in capsys.readouterr().out.split("missing inputs (5;", 1)[1]
    main(["plan", str(path)])
    out = capsys.readouterr().out
    assert line in out and "online Teacher unknown: no config for model 'checkpoints/teacher'" in out


@pytest.mark.parametrize("options", [
    ["--gpus", "8", "--gpu-memory", "80"],
    ["--gpus", "4", "--gpu-memory", "24", "--engine", "zero3", "--gpu-tflops", "165"],
])
def test_docs_plan_md_holds_what_the_command_prints(fresh_clone, capsys, options):
    """docs/plan.md (and the README's excerpts of it) show these commands' current output."""
    main(["plan", "configs/paper/ckd-qwen2.5-0.5b.yaml", *options, "--data", f"{PRETRAIN}=558128,60,15",
          "--data", f"{INSTRUCT}=665298,300,120"])
    out = capsys.readouterr().out
    repo = PAPER.parents[2]
    assert out in (repo / "docs" / "plan.md").read_text()
    assert out[out.index("\nGPU-hours (") + 1:] in (repo / "README.md").read_text()


MODERN = PAPER.parents[1] / "cascade" / "qwen2.5-vl.yaml"
MODERN_COMMAND = ["plan", "configs/cascade/qwen2.5-vl.yaml", "--gpus", "8", "--gpu-memory", "80",
                  "--data", f"{PRETRAIN}=558128,60,15", "--data", f"{INSTRUCT}=665298,300,120"]


def test_plan_costs_ready_qwen25_vl_teachers_on_their_own_image_tokens(fresh_clone, capsys):
    """The modern recipe on a fresh clone: the published Qwen2.5-VL Teachers are counted from their shapes, their
    image tokens from the assumed image size, and their forward on their own tokens (391 per image, the Student
    729)."""
    main([*MODERN_COMMAND, "--json", "plan.json"])
    out = capsys.readouterr().out
    assert "unknown" not in out
    plan = json.loads((fresh_clone / "plan.json").read_text())
    assert all(plan["plans_gpu_hours"][name] > 0 for name in ("none", "direct", "bottom-up"))
    assert 1 < plan["bottom_up_over_direct"] < 2
    stage = {stage["name"]: stage for stage in plan["stages"]}["direct/student/dft-from-qwen2.5-vl-7b"]
    assert stage["parameters"]["online Teacher"] == 8_292_166_656
    assert stage["tokens_per_epoch"]["tokens"] == 665_298 * (300 + 729)
    assert stage["teacher_tokens_per_epoch"]["tokens"] == 665_298 * (300 + 391)
    assert ("image tokens of online Teacher qwen2.5-vl-7b: 391 per 640 × 480 image (resized to 644 × 476, 14-pixel "
            "patches merged 2 × 2), at an assumed image size (--image-size)") in out

    student, teacher = (shape_of(ModelSource(vision=SIGLIP_SO400M, llm="Qwen/Qwen2.5-0.5B-Instruct")),
                        shape_of(ModelSource(path="Qwen/Qwen2.5-VL-7B-Instruct")))
    seen, own = assumed(665_298, 300, 120, 1, 729), assumed(665_298, 300, 120, 1, 391)
    student_flops = training_flops(student, seen, ("projector", "llm"), True, seen.response)
    assert stage["flops"] == pytest.approx(student_flops + inference_flops(teacher, own, own.response))

    main([*MODERN_COMMAND, "--image-size", "336x336", "--json", "plan.json"])
    assert "image tokens of online Teacher qwen2.5-vl-7b: 144 per 336 × 336 image" in capsys.readouterr().out
    smaller = {stage["name"]: stage for stage in json.loads((fresh_clone / "plan.json").read_text())["stages"]}
    assert smaller["direct/student/dft-from-qwen2.5-vl-7b"]["teacher_tokens_per_epoch"]["tokens"] == \
        665_298 * (300 + 144)
    assert error_of([*MODERN_COMMAND, "--image-size", "336"]) == (
        "error: --image-size: '336' is not WIDTHxHEIGHT in pixels (e.g. 640x480)")


def test_docs_plan_md_holds_the_modern_recipe_excerpt(fresh_clone, capsys):
    """docs/plan.md's excerpt of the modern recipe's plan (its first line, stage 5, the summary) is current."""
    main(MODERN_COMMAND)
    out = capsys.readouterr().out
    doc = (PAPER.parents[2] / "docs" / "plan.md").read_text()
    excerpt = "\n...\n".join([out[:out.index("\n")], out[out.index("[5] "):out.index("\n\n[6] ")],
                               out[out.index("\nGPU-hours (") + 1:]])
    assert excerpt in doc
