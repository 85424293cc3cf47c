"""The modern chain recipe (configs/cascade/qwen2.5-vl.yaml): ready Qwen2.5-VL Teachers, a SigLIP + Qwen2.5-0.5B
Student. It expands to the plans' stages; at tiny width, from a local copy of the hub ids, every stage runs one
step (without torchvision, the Qwen2.5-VL Teachers' processors are built without their video processors)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from transformers import (
    AutoTokenizer,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
)
from transformers.utils import is_torchvision_available

from llava_ckd.cascade.run import STAGE_MANIFEST, plan_cascade, run_stages
from llava_ckd.models import published
from llava_ckd.models.build import load_vlm
from tests.families.conftest import QWEN_VL_TOKENS, qwen_vl_token_ids, with_named_tokens

from .conftest import snapshot
from .test_paper_recipes import tiny_run_recipe

RECIPE = Path(__file__).parents[2] / "configs" / "cascade" / "qwen2.5-vl.yaml"
TEMPLATE = Path(__file__).parents[1] / "fixtures" / "chat_templates" / "qwen2_vl.jinja"
PLAN_STAGES = {
    "none": ["student/dpt", "none/student/sft"],
    "direct": ["direct/student/dpt-from-qwen2.5-vl-7b", "direct/student/sft", "direct/student/dft-from-qwen2.5-vl-7b"],
    "bottom-up": ["bottom-up/student/dpt-from-qwen2.5-vl-3b", "bottom-up/student/dpt-from-qwen2.5-vl-7b",
                  "bottom-up/student/sft", "bottom-up/student/dft-from-qwen2.5-vl-3b",
                  "bottom-up/student/dft-from-qwen2.5-vl-7b"],
}


@pytest.fixture(scope="module")
def qwen_vl_hub(tiny_hub) -> Path:
    """Tiny Qwen2.5-VL-3B/7B-Instruct in the paper tests' hub cache: the published classes, vocabulary padding and
    tying, the Qwen2.5 tokenizer there with Qwen-VL's vision tokens added, the family's image processor and chat
    template, in the hub checkpoints' layout (preprocessor_config.json, no processor_config.json)."""
    cache, tokenizer = tiny_hub
    for name in published.QWEN25_VL_SHAPES:
        folder = snapshot(cache, name)
        text_tokenizer = AutoTokenizer.from_pretrained(snapshot(cache, "Qwen/Qwen2.5-0.5B-Instruct"))
        text_tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_VL_TOKENS.values())})
        vision_tokenizer = with_named_tokens(text_tokenizer, QWEN_VL_TOKENS)
        config = published.qwen25_vl_config(name, tiny=True)
        for field, value in qwen_vl_token_ids(vision_tokenizer).items():
            setattr(config, field, value)
        torch.manual_seed(0)
        Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
        vision_tokenizer.save_pretrained(folder)
        Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(folder)
        (folder / "chat_template.jinja").write_text(TEMPLATE.read_text())
    return cache


def test_recipe_expands_to_each_plans_stages_with_ready_teachers(paper_workdir):
    cascade = plan_cascade(RECIPE)
    assert {plan: [cascade.name(node) for node in nodes] for plan, nodes in cascade.plans.items()} == PLAN_STAGES
    for node in cascade.stages:
        if "-from-" in node.step:
            assert node.job.teacher.kind == "online"
            assert node.job.teacher.model.path == f"Qwen/Qwen2.5-VL-{node.teacher.split('-')[-1].upper()}-Instruct"
    recipe = yaml.safe_load(RECIPE.read_text())
    assert [teacher["model"]["path"] for teacher in recipe["teachers"]] == list(published.QWEN25_VL_SHAPES)
    assert [term["term"] for term in recipe["defaults"]["losses"]] == ["ce", "response_kd"]


def test_stated_capacities_are_the_checkpoints_parameter_counts():
    recipe = yaml.safe_load(RECIPE.read_text())
    for teacher in recipe["teachers"]:
        with torch.device("meta"):
            model = Qwen2_5_VLForConditionalGeneration(published.qwen25_vl_config(teacher["model"]["path"]))
        assert sum(parameter.numel() for parameter in model.parameters()) == teacher["capacity"]


def test_a_qwen25_vl_checkpoint_loads_with_its_processor_class_and_image_processor(offline_hub, qwen_vl_hub, caplog):
    """The hub layout (preprocessor_config.json, no processor_config.json): `load_vlm` gives the family's processor;
    where torchvision is missing, without its video processor and with one log line saying so."""
    with caplog.at_level(logging.WARNING, logger="llava_ckd.models.processors"):
        _, processor = load_vlm("Qwen/Qwen2.5-VL-3B-Instruct")

    assert isinstance(processor, Qwen2_5_VLProcessor)
    assert isinstance(processor.image_processor, Qwen2VLImageProcessorPil)
    assert processor.image_processor.size["longest_edge"] == 112 * 112
    assert processor.chat_template == TEMPLATE.read_text()
    warnings = [record.getMessage() for record in caplog.records]
    if is_torchvision_available():
        assert hasattr(processor, "video_processor") and not warnings
    else:
        assert not hasattr(processor, "video_processor")
        assert len(warnings) == 1
        assert "the video processor of Qwen2_5_VLProcessor cannot be built (Qwen2VLVideoProcessor requires the " \
               "Torchvision library" in warnings[0]


@pytest.mark.slow
def test_every_stage_runs_one_step_at_tiny_width(offline_hub, qwen_vl_hub, paper_workdir):
    cascade = plan_cascade(tiny_run_recipe(RECIPE, paper_workdir / "recipes"))
    run_stages(cascade, echo=lambda message: None)
    for node in cascade.stages:
        manifest = json.loads((node.directory / STAGE_MANIFEST).read_text())
        assert manifest["status"] == "finished", cascade.name(node)
        assert manifest["metrics"]["global_step"] == 1, cascade.name(node)
