"""The modern chain recipe (configs/cascade/qwen2.5-vl.yaml): ready Qwen2.5-VL Teachers, a SigLIP + Qwen2.5-0.5B
Student. It expands to the plans' stages; at tiny width, from a local copy of the hub ids, every stage runs one
step (with torchvision: transformers builds Qwen2.5-VL's processor only with it); without torchvision a Qwen2.5-VL
Teacher stops with one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil
from transformers.utils import is_torchvision_available

from llava_ckd.cascade.run import MANIFEST, plan_cascade, run_stages
from llava_ckd.models import published
from llava_ckd.models.build import ModelError, load_vlm

from .conftest import snapshot
from .test_paper_recipes import tiny_run_recipe

RECIPE = Path(__file__).parents[2] / "configs" / "cascade" / "qwen2.5-vl.yaml"
TEMPLATE = Path(__file__).parents[1] / "fixtures" / "chat_templates" / "qwen2_vl.jinja"
QWEN_VL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
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
    template. No processor_config: transformers cannot build the processor object without torchvision."""
    cache, tokenizer = tiny_hub
    for name in published.QWEN25_VL_SHAPES:
        folder = snapshot(cache, name)
        vision_tokenizer = AutoTokenizer.from_pretrained(snapshot(cache, "Qwen/Qwen2.5-0.5B-Instruct"))
        vision_tokenizer.add_special_tokens({"additional_special_tokens": QWEN_VL_TOKENS})
        ids = {f"{kind}_token_id": vision_tokenizer.convert_tokens_to_ids(token) for kind, token in
               zip(("vision_start", "vision_end", "image", "video"), QWEN_VL_TOKENS, strict=True)}
        config = published.qwen25_vl_config(name, tiny=True)
        for field, value in ids.items():
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
    assert recipe["defaults"]["losses"]["visual_kd"] == recipe["defaults"]["losses"]["relation_kd"] == 0


def test_stated_capacities_are_the_checkpoints_parameter_counts():
    recipe = yaml.safe_load(RECIPE.read_text())
    for teacher in recipe["teachers"]:
        with torch.device("meta"):
            model = Qwen2_5_VLForConditionalGeneration(published.qwen25_vl_config(teacher["model"]["path"]))
        assert sum(parameter.numel() for parameter in model.parameters()) == teacher["capacity"]


@pytest.mark.skipif(is_torchvision_available(), reason="the error is for environments without torchvision")
def test_without_torchvision_a_qwen25_vl_teacher_stops_with_one_clear_error(offline_hub, qwen_vl_hub):
    with pytest.raises(ModelError, match=r"cannot build the processor of 'Qwen/Qwen2.5-VL-3B-Instruct': "
                                         r"Qwen2VLVideoProcessor requires the Torchvision library"):
        load_vlm("Qwen/Qwen2.5-VL-3B-Instruct")


@pytest.mark.slow
@pytest.mark.skipif(not is_torchvision_available(), reason="transformers builds Qwen2.5-VL's processor only with "
                                                            "torchvision")
def test_every_stage_runs_one_step_at_tiny_width(offline_hub, qwen_vl_hub, paper_workdir):
    cascade = plan_cascade(tiny_run_recipe(RECIPE, paper_workdir / "recipes"))
    run_stages(cascade, echo=lambda message: None)
    for node in cascade.stages:
        manifest = json.loads((node.directory / MANIFEST).read_text())
        assert manifest["status"] == "finished", cascade.name(node)
        assert manifest["metrics"]["global_step"] == 1, cascade.name(node)
