"""A distill stage's Teacher side: the Teacher (online or cached), checked against the Student, and its loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, ProcessorMixin

from llava_ckd.config import CachedTeacherConfig, StageConfig
from llava_ckd.data.collator import TeacherView, response_ids
from llava_ckd.data.conversations import load_conversations
from llava_ckd.data.samples import Sample
from llava_ckd.distill.cache import TeacherCache
from llava_ckd.distill.heads import check_plain_head
from llava_ckd.distill.loss import Distiller, visual_grids_differ
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.terms import LossTerm, Need, needs_of
from llava_ckd.distill.vocab import shared_vocab_size, shared_vocabulary
from llava_ckd.engines import processes
from llava_ckd.files import DataError
from llava_ckd.models.load import model_from_source


def build_distiller(
    config: StageConfig, student: PreTrainedModel, processor: ProcessorMixin, samples: Sequence[Sample]
) -> tuple[Distiller, TeacherView | None]:
    """The stage's `Distiller`, and how the Teacher's inputs differ from the Student's (None: they do not)."""
    tokenizer = processor.tokenizer
    student_rows = len(student.get_output_embeddings().weight)
    if isinstance(config.teacher, CachedTeacherConfig):
        vocab_size = shared_vocab_size(student_rows, student_rows, len(tokenizer))
        cache = TeacherCache(config.teacher.path)
        cache.check_matches(tokenizer, config.data.conversations, config.data.images, config.data.max_length, samples,
                            vocab_size)
        return Distiller(cache, config.losses, config.divergence, vocab_size, config.kd_chunk_size), None

    teacher_source = config.teacher.model
    if config.precision != "fp32":  # the Teacher only infers: it runs in the stage's half precision
        teacher_source = teacher_source.model_copy(update={"dtype": config.precision})
    teacher_model, teacher_processor = model_from_source(teacher_source, seed=config.seed)
    check_plain_head(teacher_model, "Teacher")
    shared = shared_vocabulary(tokenizer, teacher_processor.tokenizer)
    vocab_size = shared_vocab_size(student_rows, len(teacher_model.get_output_embeddings().weight), shared)
    refuse_answers_beyond(samples, vocab_size, tokenizer)
    with processes().main_process_first():  # the others read the sample cache it writes
        teacher_samples, _ = load_conversations(config.data.conversations, config.data.images, teacher_processor,
                                                config.data.max_length)
    refuse_other_image_tokens(samples, teacher_samples, config.losses)
    teacher = OnlineTeacher(teacher_model)
    distiller = Distiller(teacher, config.losses, config.divergence, vocab_size, config.kd_chunk_size)
    return distiller, TeacherView.between(samples, processor, teacher_samples, teacher_processor)


def refuse_answers_beyond(samples: Sequence[Sample], vocab_size: int, tokenizer) -> None:
    """KD compares the first `vocab_size` token ids: an answer token beyond them has no Teacher probability."""
    for sample in samples:
        beyond = [token for token in response_ids(sample) if token >= vocab_size]
        if beyond:
            raise DataError(f"sample {sample.sample_id}: answer token {tokenizer.convert_ids_to_tokens(beyond[0])!r} "
                             f"(id {beyond[0]}) lies outside the {vocab_size} token ids Teacher and Student share")


def refuse_other_image_tokens(samples: Sequence[Sample], teacher_samples: Sequence[Sample],
                              losses: Sequence[LossTerm]) -> None:
    """Visual-token and relation KD pair the two models' image tokens one for one: a Teacher that expands an image
    into other image tokens is refused before the first step, naming the first such sample."""
    if Need.IMAGE_TOKEN_STATES not in needs_of(losses):
        return
    theirs_by_record = {theirs.record: theirs.image_tokens for theirs in teacher_samples}
    for sample in samples:
        theirs = theirs_by_record.get(sample.record)
        if theirs is not None and theirs != sample.image_tokens:
            raise DataError(f"sample {sample.sample_id}: " + visual_grids_differ(
                torch.tensor(sample.image_tokens), torch.tensor(theirs)))
