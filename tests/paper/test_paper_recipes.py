"""The paper recipes (configs/paper/): they load and expand to LLaVA-KD's stages in each plan, and, at tiny width
with the real classes, hub ids and vocabulary padding, every stage of every plan runs through the recipe code path."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import try_to_load_from_cache
from safetensors import safe_open
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoConfig, AutoTokenizer, LlavaForConditionalGeneration

from llava_ckd.cascade.run import CASCADE_FILE, STAGE_MANIFEST, plan_cascade, run_stages
from llava_ckd.models import published

from .conftest import INSTRUCT, INSTRUCT_JSON, PRETRAIN, PRETRAIN_JSON

RECIPES = Path(__file__).parents[2] / "configs" / "paper"
STUDENTS = {"ckd-qwen2.5-0.5b.yaml": "Qwen/Qwen2.5-0.5B-Instruct",
            "ckd-qwen2.5-1.5b.yaml": "Qwen/Qwen2.5-1.5B-Instruct"}
TEACHERS = {"qwen2.5-3b": "Qwen/Qwen2.5-3B-Instruct", "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct"}
GPUS = 8  # the recipes' batch sizes are per device, for 8 GPUs

PLAN_STAGES = {
    "none": ["student/dpt", "none/student/sft"],
    "direct": ["teacher-qwen2.5-7b/dpt", "teacher-qwen2.5-7b/sft", "direct/student/dpt-from-qwen2.5-7b",
               "direct/student/sft", "direct/student/dft-from-qwen2.5-7b"],
    "bottom-up": ["teacher-qwen2.5-7b/dpt", "teacher-qwen2.5-7b/sft", "teacher-qwen2.5-3b/dpt",
                  "teacher-qwen2.5-3b/sft", "bottom-up/student/dpt-from-qwen2.5-3b",
                  "bottom-up/student/dpt-from-qwen2.5-7b", "bottom-up/student/sft",
                  "bottom-up/student/dft-from-qwen2.5-3b", "bottom-up/student/dft-from-qwen2.5-7b"],
}
TEACHER_STAGES = PLAN_STAGES["bottom-up"][:4]
KD_TERMS = ("response_kd", "visual_kd", "relation_kd")


def recipe_paths() -> list[Path]:
    return sorted(RECIPES.glob("*.yaml"))


def test_the_paper_recipes_are_there():
    assert [path.name for path in recipe_paths()] == sorted(STUDENTS)


def test_the_recipes_differ_only_in_the_student():
    first, *others = [yaml.safe_load(path.read_text()) for path in recipe_paths()]
    for other in others:
        assert {key: value for key, value in other.items() if key != "student"} == {
            key: value for key, value in first.items() if key != "student"}


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_recipe_expands_to_llava_kd_stages_in_each_plan(name, paper_workdir):
    cascade = plan_cascade(RECIPES / name)
    assert {plan: [cascade.name(node) for node in nodes] for plan, nodes in cascade.plans.items()} == PLAN_STAGES
    assert cascade.recipe.student.llm == STUDENTS[name]
    assert {spec.name: spec.model.llm for spec in cascade.recipe.teachers} == TEACHERS
    assert {spec.model.vision for spec in cascade.recipe.teachers} | {cascade.recipe.student.vision} == {
        published.SIGLIP_SO400M}

    nodes = {cascade.name(node): node for node in cascade.stages}
    for stage_name, node in nodes.items():
        job, step = node.job, node.step
        assert (job.precision, job.epochs, job.schedule, job.warmup_ratio, job.data.max_length) == (
            "bf16", 1.0, "cosine", 0.03, 2048)
        assert job.model.vision_feature_layer == -2
        assert "vision" not in job.trained_parts
        if step.startswith("dpt"):     # projector only, on the 558K captions, lr 1e-3, global batch 256
            assert job.data.conversations == PRETRAIN_JSON and job.data.images == PRETRAIN / "images"
            assert (job.trained_parts, job.learning_rate, job.batch_size * job.grad_accum * GPUS) == (
                ("projector",), 1e-3, 256)
        else:                          # projector + LLM, on the 665K mix, lr 2e-5, global batch 128
            assert job.data.conversations == INSTRUCT_JSON and job.data.images == INSTRUCT / "images"
            assert (job.trained_parts, job.learning_rate, job.batch_size * job.grad_accum * GPUS) == (
                ("projector", "llm"), 2e-5, 128)
        distils = "-from-" in step
        assert job.kind == ("distill" if distils else "pretrain" if step == "dpt" else "sft"), stage_name
        if distils:
            teacher = step.split("-from-")[1]
            assert node.teacher == teacher and job.teacher.kind == "online"
            assert job.teacher.model.path == str(nodes[f"teacher-{teacher}/sft"].output)
            assert {term.name: term.weight for term in job.losses} == {
                    "ce": 1.0, "response_kd": 1.0, "visual_kd": 1.0, "relation_kd": 1.0}
            assert (job.divergence.name, job.divergence.temperature) == ("forward_kl", 1.0)

    # bottom-up: each Student stage starts from the one before it
    student_stages = [nodes[stage] for stage in PLAN_STAGES["bottom-up"] if "/student/" in stage]
    assert student_stages[0].job.model.llm == STUDENTS[name]
    for previous, following in itertools.pairwise(student_stages):
        assert following.inputs["model"] is previous


def test_stated_capacities_are_the_published_parameter_counts():
    """Each Teacher's `capacity:` is its composed VLM's parameter count (the <image> token added to Qwen2.5's
    151,665 tokens fits in the padded rows), so a real run orders the chain without downloading anything."""
    recipe = yaml.safe_load(recipe_paths()[0].read_text())
    for teacher in recipe["teachers"]:
        config = published.llava_config(teacher["model"]["vision"], teacher["model"]["llm"],
                                        published.QWEN25_TOKENIZER_TOKENS)
        with torch.device("meta"):
            model = LlavaForConditionalGeneration(config)
        assert teacher["capacity"] == sum(parameter.numel() for parameter in model.parameters())


def test_hub_ids_resolve_to_the_tiny_cache(offline_hub, tiny_hub):
    _, tokenizer = tiny_hub
    loaded = AutoTokenizer.from_pretrained("Qwen/Qwen2.5-0.5B-Instruct")
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert Path(try_to_load_from_cache("Qwen/Qwen2.5-0.5B-Instruct", "tokenizer.json")).is_relative_to(offline_hub)
    assert AutoConfig.from_pretrained("Qwen/Qwen2.5-7B-Instruct").vocab_size == 152_064
    siglip = AutoConfig.from_pretrained(published.SIGLIP_SO400M)
    assert (siglip.vision_config.image_size, siglip.vision_config.patch_size) == (384, 14)


# ----------------------------------------------------------------------------------------------------------------
# Every stage of both recipes, one step each, at tiny width


def tiny_run_recipe(path: Path, folder: Path) -> Path:
    """The recipe with only step, batch, precision and loader fields changed: one step of 2 conversations, fp32
    (bf16 is unusably slow on CPUs without bf16 units), no worker processes, a log line at the step."""
    recipe = yaml.safe_load(path.read_text())
    changes = {"max_steps": 1, "batch_size": 2, "grad_accum": 1, "precision": "fp32", "save_steps": 1000,
               "logging_steps": 1, "dataloader_workers": 0}
    recipe["defaults"] |= changes
    for stage in recipe["stages"]:
        stage |= {field: value for field, value in changes.items() if field in stage}
    folder.mkdir(exist_ok=True)
    tiny = folder / path.name
    tiny.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return tiny


def logged_scalars(stage_directory: Path) -> dict[str, list[float]]:
    """Every scalar the stage's Trainer logged to TensorBoard (`OUTPUT/runs/`), by tag."""
    scalars: dict[str, list[float]] = {}
    for events in sorted(stage_directory.glob("runs/**/events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return scalars


def lm_head_rows(checkpoint: Path) -> tuple[int, int | None]:
    """Rows of the input embedding and of a separately stored LM head (None when tied) in a saved checkpoint."""
    with safe_open(checkpoint / "model.safetensors", "pt") as weights:
        shapes = {name: weights.get_slice(name).get_shape() for name in weights.keys()}  # noqa: SIM118
    def rows(suffix: str) -> int | None:
        return next((shape[0] for name, shape in shapes.items() if name.endswith(suffix)), None)

    return rows("embed_tokens.weight"), rows("lm_head.weight")


@pytest.mark.slow
def test_every_stage_of_both_paper_recipes_runs_at_tiny_width(offline_hub, paper_workdir):
    messages: list[str] = []
    for path in recipe_paths():
        cascade = plan_cascade(tiny_run_recipe(path, paper_workdir / "recipes"))
        run_stages(cascade, echo=messages.append)
        summary = json.loads((cascade.recipe.output / CASCADE_FILE).read_text())
        assert {plan: entry["stages"] for plan, entry in summary["plans"].items()} == PLAN_STAGES

        for node in cascade.stages:
            name = cascade.name(node)
            manifest = json.loads((node.directory / STAGE_MANIFEST).read_text())
            assert manifest["status"] == "finished", name
            assert manifest["metrics"]["global_step"] == 1, name
            if "-from-" in node.step:
                logged = logged_scalars(node.directory)
                for term in KD_TERMS:
                    values = logged.get(f"train/{term}")
                    assert values and all(math.isfinite(value) for value in values), (name, term, sorted(logged))

        # the Student keeps Qwen2.5-0.5B/1.5B's padded vocabulary and tying; the 7B Teacher its own
        student = cascade.students["bottom-up"].output
        config = AutoConfig.from_pretrained(student)
        assert config.architectures == ["LlavaForConditionalGeneration"]
        assert (config.text_config.model_type, config.text_config.vocab_size) == ("qwen2", 151_936)
        assert config.vision_config.model_type == "siglip_vision_model" and config.image_seq_length == 729
        assert lm_head_rows(student) == (151_936, None)
        teacher = next(node for node in cascade.stages if cascade.name(node) == "teacher-qwen2.5-7b/sft").output
        assert AutoConfig.from_pretrained(teacher).text_config.vocab_size == 152_064
        assert lm_head_rows(teacher) == (152_064, 152_064)

    # the second recipe found the Teachers' stages the first one trained (same content, same folder)
    skipped = [message.split("] ")[1].removesuffix(": finished before, skipped") for message in messages
               if message.endswith("finished before, skipped")]
    assert skipped == TEACHER_STAGES
