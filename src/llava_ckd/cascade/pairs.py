"""What a Teacher must share with the model it teaches, checked when the recipe is read, before any stage trains:
its tokenizer (logit KD compares distributions token id by token id) and, for the image-token terms, as many image
tokens per image (they pair the two models' image tokens one for one)."""

from __future__ import annotations

import logging
from pathlib import Path

from llava_ckd.cascade.expand import Cascade, origin
from llava_ckd.cascade.recipe import Recipe
from llava_ckd.config import ConfigError, StageConfig
from llava_ckd.distill.terms import Need
from llava_ckd.distill.vocab import shared_vocabulary
from llava_ckd.models.build import ModelError
from llava_ckd.models.load import tokenizer_from_source
from llava_ckd.models.shapes import ConfigAbsent, ShapeError, shape_of
from llava_ckd.models.source import ModelSource

log = logging.getLogger(__name__)


def tokenizer_location(source: ModelSource) -> str:
    return str(source.path or source.llm or source.tokenizer)


def check_chain_tokenizers(recipe: Recipe, source: Path | str) -> None:
    """Refuse a Teacher whose tokenizer differs from the Student's; one that cannot be read here (a hub id
    without network) is left to the stage that loads it, and said so in the log."""
    if set(recipe.plans) <= {"none"}:
        return
    try:
        student = tokenizer_from_source(recipe.student)
    except (OSError, ValueError) as error:
        log.warning("%s: tokenizers not checked: the Student's (%s) is not in local files (%s)", source,
                    tokenizer_location(recipe.student), str(error).splitlines()[0])
        return
    for index, teacher in enumerate(recipe.teachers):
        try:
            teacher_tokenizer = tokenizer_from_source(teacher.model)
        except (ModelError, OSError, ValueError) as error:
            log.warning("%s: Teacher %r's tokenizer (%s) not checked: not in local files (%s)", source,
                        teacher.name, tokenizer_location(teacher.model), str(error).splitlines()[0])
            continue
        try:
            shared_vocabulary(student, teacher_tokenizer)
        except ValueError as error:
            raise ConfigError(f"{source}: teachers.{index} ({teacher.name}): {error}") from None


def fixed_image_tokens(source: ModelSource) -> int | None:
    """The tokens every image becomes in this model, when its config is here and fixes them (not dynamic
    resolution)."""
    try:
        shape = shape_of(source)
    except (ConfigAbsent, ShapeError):
        return None
    return shape.image_tokens if shape.image_assumption is None else None


def check_image_token_pairs(cascade: Cascade) -> None:
    """Refuse a stage whose image-token terms pair a Teacher and a Student that expand an image into different
    numbers of image tokens, where both models fix that number; dynamic-resolution pairs are checked image by image
    when the stage reads its data."""
    counts = {}
    for node in cascade.stages:
        if not isinstance(node.job, StageConfig) or node.job.kind != "distill" or node.teacher is None:
            continue
        terms = [term.name for term in node.job.losses if Need.IMAGE_TOKEN_STATES in term.needs]
        if not terms:
            continue
        for model in (node.model, node.teacher):
            if model not in counts:
                counts[model] = fixed_image_tokens(origin(cascade.recipe, model).source)
        student, teacher = counts[node.model], counts[node.teacher]
        joined = " and ".join(terms)
        if student is not None and teacher is not None and student != teacher:
            raise ConfigError(
                f"{cascade.source}: stage {cascade.name(node)}: {joined} pair the image tokens of Teacher and Student "
                f"one for one, but Teacher {node.teacher!r} expands an image into {teacher} image tokens and the model "
                f"it teaches into {student}: leave {joined} out of this stage (response KD aligns by the assistant "
                "text)")
