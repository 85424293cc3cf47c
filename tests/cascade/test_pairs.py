"""A Teacher whose image tokens cannot pair with the Student's is refused for image-token terms when the recipe is
read (a dry run included), not at the stage's first step."""

import pytest

from llava_ckd.cascade import plan_cascade
from llava_ckd.config import ConfigError
from tests.cascade.conftest import recipe_dict, write_recipe
from tests.distill.conftest import coarse_teacher


@pytest.fixture(scope="module")
def coarse_checkpoint(tokenizer, tmp_path_factory):
    """A saved Teacher that expands each 32 px image into 4 image tokens (the Student preset: 16)."""
    model, processor = coarse_teacher(tokenizer)
    folder = tmp_path_factory.mktemp("coarse-teacher")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def recipe_with_coarse_teacher(tmp_path, tokenizer_dir, colour_dataset, coarse_checkpoint, losses):
    recipe = recipe_dict(tmp_path, tokenizer_dir, colour_dataset, plans=("none", "direct"),
                         teachers=[{"name": "coarse", "model": {"path": str(coarse_checkpoint)}}])
    recipe["stages"][2]["losses"] = losses
    return write_recipe(tmp_path / "recipe.yaml", recipe)


@pytest.mark.parametrize("dry_run", [True, False])
def test_visual_kd_from_a_teacher_with_other_image_tokens_is_refused_when_the_recipe_is_read(
        tmp_path, tokenizer_dir, colour_dataset, coarse_checkpoint, dry_run):
    recipe = recipe_with_coarse_teacher(tmp_path, tokenizer_dir, colour_dataset, coarse_checkpoint,
                                        [{"term": "ce"}, {"term": "response_kd"}, {"term": "visual_kd"}])
    with pytest.raises(ConfigError, match=r"stage .*student/dft-from-coarse: visual_kd pair the image tokens of "
                                          r"Teacher and Student one for one, but Teacher 'coarse' expands an image "
                                          r"into 4 image tokens and the model it teaches into 16"):
        plan_cascade(recipe, missing_ok=dry_run)


def test_response_kd_from_the_same_teacher_is_planned(tmp_path, tokenizer_dir, colour_dataset, coarse_checkpoint):
    recipe = recipe_with_coarse_teacher(tmp_path, tokenizer_dir, colour_dataset, coarse_checkpoint,
                                        [{"term": "ce"}, {"term": "response_kd"}])
    cascade = plan_cascade(recipe, missing_ok=True)
    assert any(node.teacher == "coarse" for node in cascade.stages)
