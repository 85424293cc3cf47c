"""Every Teacher of a chain must speak the Student's tokenizer: checked when the recipe is read, before any
stage trains, since logit KD compares distributions token id by token id."""

from __future__ import annotations

import logging
from pathlib import Path

from llava_ckd.cascade.recipe import Recipe
from llava_ckd.config import ConfigError
from llava_ckd.distill.vocab import shared_vocabulary
from llava_ckd.models.build import ModelError
from llava_ckd.models.load import tokenizer_from_source
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
