from pathlib import Path

import pytest

from llava_ckd.cascade import load_recipe, plan_cascade
from llava_ckd.config import ConfigError
from tests.cascade.conftest import recipe_dict, write_recipe


def teacher(name, preset, tokenizer_dir, **extra):
    return {"name": name, "model": {"preset": preset, "tokenizer": str(tokenizer_dir)}, **extra}


def error_of(tmp_path, recipe: dict) -> str:
    with pytest.raises(ConfigError) as error:
        plan_cascade(write_recipe(tmp_path / "recipe.yaml", recipe))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'recipe.yaml'}: ")
    return message


def dft(**fields):
    return {"name": "dft", "kind": "distill", **fields}


@pytest.mark.parametrize(("changes", "message"), [
    ({"teacher": []}, "teacher: Extra inputs are not permitted"),
    ({"stages": [{"name": "sft", "kind": "sft", "lr": 0.1}]}, "stages.0.lr: Extra inputs are not permitted"),
    ({"overrides": [{"stage": "sft", "set": {"steps": 3}}]}, "overrides.0.set.steps: Extra inputs are not permitted"),
    ({"plans": ["sideways"]}, "plans.0: Input should be 'none', 'direct', 'top-down' or 'bottom-up'"),
    ({"stages": [{"name": "sft", "kind": "sft"}, dft(losses={"ce": -1})]},
     "stages.1.losses.ce: Input should be greater than or equal to 0"),
    ({"stages": [{"name": "sft", "kind": "sft", "signals": "cached"}]},
     "stages.0: signals: only a distill stage takes these fields (stage 'sft' is sft)"),
    ({"stages": [dft(signals="cached", losses={"visual_kd": 1.0})]},
     "stages.0: Value error, losses: visual_kd reads the Teacher's hidden states"),
    ({"stages": [{"name": "sft", "kind": "sft"}, {"name": "sft", "kind": "pretrain"}]},
     "stages: sft appear(s) more than once"),
    ({"overrides": [{"stage": "dpt", "set": {"max_steps": 3}}]},
     "overrides.0.stage: no stage 'dpt'; the template has pretrain, sft, dft"),
    ({"overrides": [{"stage": "sft", "set": {"kind": "pretrain"}}]},
     "overrides.0.set.kind: an override cannot change a stage's kind"),
    ({"stages": [{"name": "sft", "kind": "sft"}, dft(teachers=[])]},
     "stages.1.teachers: Value error, an empty list distils from nobody"),
    ({"evaluation": {"benchmark": "imagenet", "data": "."}}, "evaluation.benchmark: unknown benchmark 'imagenet'"),
    ({"evaluation": {"benchmark": "synthetic", "data": "no-such-folder"}},
     "evaluation.data: folder not found: no-such-folder"),
])
def test_malformed_recipes_are_refused_naming_the_field(tmp_path, tokenizer_dir, colour_dataset, changes, message):
    assert message in error_of(tmp_path, recipe_dict(tmp_path, tokenizer_dir, colour_dataset, **changes))


def test_stage_numbers_are_checked_in_the_defaults_of_every_stage(tmp_path, tokenizer_dir, colour_dataset):
    recipe = recipe_dict(tmp_path, tokenizer_dir, colour_dataset)
    recipe["defaults"]["batch_size"] = 0
    recipe["overrides"] = [{"stage": "sft", "set": {"learning_rate": -0.1}}]
    message = error_of(tmp_path, recipe)
    assert "stages.0.batch_size: Input should be greater than or equal to 1" in message
    assert "overrides.0.set.learning_rate: Input should be greater than 0" in message


@pytest.mark.parametrize(("where", "stage"), [
    ("stages.2", dft(teachers=["tiny-ta", "giant"])),
    ("overrides.0.set", None),
])
def test_a_stage_naming_a_teacher_outside_the_chain_is_refused(tmp_path, tokenizer_dir, colour_dataset, where, stage):
    recipe = recipe_dict(tmp_path, tokenizer_dir, colour_dataset)
    if stage:
        recipe["stages"][2] = stage
    else:
        recipe["overrides"] = [{"stage": "dft", "plan": "direct", "set": {"teachers": ["giant"]}}]
    index = 1 if stage else 0
    assert (f"{where}.teachers.{index}: unknown Teacher 'giant'; the chain has tiny-ta, tiny-teacher"
            in error_of(tmp_path, recipe))


def test_an_override_for_an_unknown_model_is_refused(tmp_path, tokenizer_dir, colour_dataset):
    recipe = recipe_dict(tmp_path, tokenizer_dir, colour_dataset,
                         overrides=[{"stage": "sft", "model": "giant", "set": {"max_steps": 1}}])
    assert "overrides.0.model: unknown model 'giant'" in error_of(tmp_path, recipe)


@pytest.mark.parametrize(("teachers", "message"), [
    ([("tiny-teacher", "tiny-teacher", {}), ("tiny-ta", "tiny-ta", {})],
     "teachers: the chain must be listed smallest first, but 'tiny-teacher' ("),
    ([("tiny-ta", "tiny-ta", {"capacity": 3_000_000_000}), ("tiny-teacher", "tiny-teacher", {"capacity": 7})],
     "but 'tiny-ta' (3,000,000,000 parameters, stated) is not smaller than 'tiny-teacher' (7, stated)"),
    ([("tiny-ta", "tiny-ta", {"capacity": 5}), ("tiny-teacher", "tiny-teacher", {"capacity": 5})],
     "is not smaller than 'tiny-teacher' (5, stated)"),
    ([("tiny-ta", "tiny-ta", {}), ("tiny-ta", "tiny-teacher", {})], "teachers: tiny-ta appear(s) more than once"),
    ([("student", "tiny-ta", {})], "teachers.0.name: Value error, 'student' names the Student"),
])
def test_a_chain_out_of_order_or_with_duplicates_is_refused(tmp_path, tokenizer_dir, colour_dataset, teachers, message):
    chain = [teacher(name, preset, tokenizer_dir, **extra) for name, preset, extra in teachers]
    assert message in error_of(tmp_path, recipe_dict(tmp_path, tokenizer_dir, colour_dataset, teachers=chain))


def test_counted_capacities_say_so(tmp_path, tokenizer_dir, colour_dataset):
    chain = [teacher("tiny-teacher", "tiny-teacher", tokenizer_dir), teacher("tiny-ta", "tiny-ta", tokenizer_dir)]
    message = error_of(tmp_path, recipe_dict(tmp_path, tokenizer_dir, colour_dataset, teachers=chain))
    assert "parameters, counted) is not smaller than 'tiny-ta' (" in message


def test_missing_files_are_named(tmp_path, tokenizer_dir, colour_dataset):
    with pytest.raises(ConfigError, match="config file not found: .*absent.yaml"):
        plan_cascade(tmp_path / "absent.yaml")

    missing_checkpoint = recipe_dict(tmp_path, tokenizer_dir, colour_dataset, teachers=[
        {"name": "big", "model": {"path": str(tmp_path / "no-such-checkpoint")}}])
    assert ("teachers.0.model: cannot count the parameters of Teacher 'big': no checkpoint folder"
            in error_of(tmp_path, missing_checkpoint))

    missing_tokenizer = recipe_dict(tmp_path, tokenizer_dir, colour_dataset,
                                    student={"preset": "tiny-student", "tokenizer": str(tmp_path / "nothing")})
    assert f"student.tokenizer: folder not found: {tmp_path / 'nothing'}" in error_of(tmp_path, missing_tokenizer)

    missing_data = recipe_dict(tmp_path, tokenizer_dir, colour_dataset)
    missing_data["stages"][0]["data"] = {"conversations": str(tmp_path / "captions.json")}
    assert (f"stage student/pretrain: data.conversations: file not found: {tmp_path / 'captions.json'}"
            in error_of(tmp_path, missing_data))


def test_models_distilling_from_each_other_in_a_circle_are_refused(tmp_path, tokenizer_dir, colour_dataset):
    recipe = recipe_dict(tmp_path, tokenizer_dir, colour_dataset, plans=["top-down"], overrides=[
        {"stage": "dft", "model": "tiny-ta", "plan": "top-down", "set": {"teachers": ["tiny-ta"]}}])
    assert "plan top-down: models distil from each other in a circle: tiny-ta -> tiny-ta" in error_of(tmp_path, recipe)


def test_the_demo_recipe_is_valid(monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[2])
    recipe = load_recipe(Path("configs/cascade/demo.yaml"))
    assert recipe.plans == ("none", "direct", "top-down", "bottom-up")
    assert recipe.chain == ("tiny-ta", "tiny-teacher")
    assert [stage.kind for stage in recipe.stages] == ["pretrain", "sft", "distill"]


def test_a_teacher_with_another_tokenizer_is_refused_before_anything_runs(tmp_path, tokenizer_dir, colour_dataset):
    from llava_ckd.models import build_preset, train_tokenizer
    from tests.conftest import CORPUS

    other = train_tokenizer([*CORPUS, "a corpus with other words merges other tokens"] * 20, vocab_size=320)
    model, processor = build_preset("tiny-teacher", other)
    model.save_pretrained(tmp_path / "big")
    processor.save_pretrained(tmp_path / "big")
    teachers = [teacher("tiny-ta", "tiny-ta", tokenizer_dir),
                {"name": "big", "model": {"path": str(tmp_path / "big")}}]
    message = error_of(tmp_path, recipe_dict(tmp_path, tokenizer_dir, colour_dataset, teachers=teachers))
    assert "teachers.1 (big): Student tokenizer" in message and "logit KD needs one base vocabulary" in message
    plan_cascade(write_recipe(tmp_path / "recipe.yaml", recipe_dict(
        tmp_path, tokenizer_dir, colour_dataset, teachers=teachers, plans=["none"])))  # nothing distils: no check
