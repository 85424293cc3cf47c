"""Every stage's loss: the weighted sum of its loss terms (see `terms.py`), from one Teacher in a distill stage.

    loss = (w_ce·CE_sum + w_response_kd·KD_sum) / response tokens     one fused pass over the Student's head
         + Σ image-token terms · their weight                         online Teacher with the same image tokens
           visual_kd:   KD_sum(image-token positions) / image tokens
           relation_kd: Σ_images RDist / images                       (LLaVA-KD's relation loss)

Images are told apart by the number of image tokens each one expanded into (`image_token_counts`, the
processor's own count per image), so images of different sizes in one batch are grouped correctly.

Every term is a sum over one micro-batch divided by its count over the whole gradient-accumulation
window (`TargetCounts`), so accumulating micro-batches gives the gradient of the big batch. The
Teacher is either online (hidden states, any divergence) or cached (top-k signals, forward KL); without
one (pretrain and SFT stages) the loss is the cross-entropy alone, still without full logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from accelerate.utils import extract_model_from_parallel
from torch import Tensor, nn

from llava_ckd.data.collator import IMAGE_TOKEN_COUNTS
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.heads import DEFAULT_CHUNK_SIZE, HeadLosses, fused_head_loss, head_kd_loss
from llava_ckd.distill.positions import final_hidden_states, next_token_targets, response_mask
from llava_ckd.distill.sparse import SparseTeacherSignal, sparse_head_kd_loss
from llava_ckd.distill.teachers import OnlineTeacher, TeacherOutputs
from llava_ckd.distill.terms import (
    CrossEntropy,
    HeadTerm,
    ImageTokenStates,
    ImageTokenTerm,
    LossTerm,
    checked,
    loss_chunk_size,
    per,
    term_named,
)
from llava_ckd.engines import run_inside


class CachedSignals(Protocol):
    def signal(self, sample_indices: Sequence[int]) -> SparseTeacherSignal:
        """The signals at the response positions of these samples, sample after sample."""


class TargetCounts(NamedTuple):
    """What each term is averaged over: response tokens, image tokens and images, as tensors."""

    response_tokens: Tensor
    image_tokens: Tensor
    images: Tensor

    @classmethod
    def of_batches(cls, batches: Sequence[dict[str, Tensor]], image_token_id: int) -> TargetCounts:
        """The counts over several micro-batches (one gradient-accumulation window), or one."""
        totals = torch.stack(
            [
                torch.stack(
                    [
                        response_mask(batch["labels"]).sum(),
                        (batch["input_ids"] == image_token_id).sum(),
                        torch.tensor(
                            len(batch[IMAGE_TOKEN_COUNTS]) if IMAGE_TOKEN_COUNTS in batch else 0,
                            device=batch["input_ids"].device,
                        ),
                    ]
                )
                for batch in batches
            ]
        ).sum(0)
        return cls(*totals)


class LossTerms(NamedTuple):
    loss: Tensor
    """The weighted total, the only output with gradients."""
    terms: dict[str, Tensor]
    """Each term, detached and normalised (unweighted): ce; response_kd with a Teacher; visual_kd and relation_kd
    when they apply."""


class Distiller:
    """CE and distillation of a Student from one Teacher, online or cached; CE alone without a Teacher."""

    def __init__(
        self,
        teacher: OnlineTeacher | CachedSignals | None,
        losses: Sequence[LossTerm],
        divergence: DivergenceSpec,
        vocab_size: int,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ):
        """`divergence` is the stage's: the one of every KD term that does not name its own."""
        self.teacher = teacher
        self.losses = checked(losses)
        self.divergence = divergence
        self.vocab_size = vocab_size
        self.chunk_size = chunk_size
        self.head_weights = {"ce_weight": 0.0, "kd_weight": 0.0} | {
            term.head_weight: term.weight for term in self.losses if isinstance(term, HeadTerm)}
        self.image_token_terms = [term for term in self.losses if isinstance(term, ImageTokenTerm)]

    @classmethod
    def cross_entropy(cls, vocab_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Distiller:
        """The Student's cross-entropy over the first `vocab_size` rows of its head, without full logits."""
        return cls(None, [CrossEntropy()], DivergenceSpec(), vocab_size, chunk_size)

    @property
    def needs_sample_index(self) -> bool:
        return self.teacher is not None and not isinstance(self.teacher, OnlineTeacher)

    def divergence_of(self, term: LossTerm | None) -> DivergenceSpec:
        """The term's own divergence, or the stage's."""
        return getattr(term, "divergence", None) or self.divergence

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], counts: TargetCounts | None = None) -> LossTerms:
        """The loss of one micro-batch of the Student `model` (plain, or wrapped by its training engine).

        `counts` defaults to the batch's own (no gradient accumulation).
        """
        student = extract_model_from_parallel(model)
        if counts is None:
            counts = TargetCounts.of_batches([batch], student.config.image_token_id)
        return run_inside(model, lambda: self._loss(student, batch, counts))

    def _loss(self, student: nn.Module, batch: dict[str, Tensor], counts: TargetCounts) -> LossTerms:
        hidden = final_hidden_states(student, batch)
        positions = response_mask(batch["labels"])
        head_arguments = dict(
            student_hidden=hidden[positions],
            student_head_weight=student.get_output_embeddings().weight,
            vocab_size=self.vocab_size,
            chunk_size=self.chunk_size,
            loss_chunk_size=loss_chunk_size(self.vocab_size),
            labels=next_token_targets(batch["labels"])[positions],
            **self.head_weights,
        )
        if self.teacher is None:
            return self._weighted(fused_head_loss(chunk_kd=None, **head_arguments), counts, [])
        if not isinstance(self.teacher, OnlineTeacher):
            signal = self.teacher.signal(batch["sample_index"].tolist())
            response = sparse_head_kd_loss(signal=_to(signal, hidden.device), **head_arguments)
            return self._weighted(response, counts, [])

        teacher = self.teacher(batch)
        with self.teacher.head_weight() as teacher_head:
            response = head_kd_loss(
                teacher_hidden=aligned_response_hidden(teacher, positions),
                teacher_head_weight=teacher_head,
                spec=self.divergence_of(term_named(self.losses, "response_kd")),
                **head_arguments,
            )
            image_terms = []
            if self.image_token_terms:
                image_terms = self._image_token_terms(student, batch, hidden, teacher, teacher_head, counts)
        return self._weighted(response, counts, image_terms)

    def _weighted(
        self, response: HeadLosses, counts: TargetCounts, image_terms: list[tuple[LossTerm, Tensor]]
    ) -> LossTerms:
        loss = per(response.loss, counts.response_tokens)
        terms = {"ce": per(response.ce_sum, counts.response_tokens)}
        if self.teacher is not None:
            terms["response_kd"] = per(response.kd_sum, counts.response_tokens)
        for term, value in image_terms:
            loss = loss + term.weight * value
            terms[term.name] = value.detach()
        return LossTerms(loss, terms)

    def _image_token_terms(
        self,
        student: nn.Module,
        batch: dict[str, Tensor],
        hidden: Tensor,
        teacher: TeacherOutputs,
        teacher_head: Tensor,
        counts: TargetCounts,
    ) -> list[tuple[LossTerm, Tensor]]:
        """The image-token terms' values, for a Teacher that expands every image into as many tokens as the Student."""
        student_images = batch["input_ids"] == student.config.image_token_id
        if IMAGE_TOKEN_COUNTS not in batch:
            if student_images.any():
                raise ValueError(f"the batch holds image tokens but no {IMAGE_TOKEN_COUNTS} (each image's number of "
                                 "image tokens, which the Collator writes): the visual losses cannot group them")
            return [(term, hidden.new_zeros(())) for term in self.image_token_terms]
        image_counts = batch[IMAGE_TOKEN_COUNTS]
        if teacher.image_token_counts is None or not torch.equal(image_counts, teacher.image_token_counts):
            raise ValueError(visual_grids_differ(image_counts, teacher.image_token_counts))
        states = ImageTokenStates(
            student=hidden[student_images],
            student_head=student.get_output_embeddings().weight,
            teacher=teacher.hidden[teacher.input_ids == self.teacher.image_token_id],
            teacher_head=teacher_head,
            online_teacher=self.teacher,
            tokens_per_image=image_counts.tolist(),
            image_tokens=counts.image_tokens,
            images=counts.images,
            vocab_size=self.vocab_size,
            chunk_size=self.chunk_size,
        )
        return [(term, term.value(states, self.divergence_of(term))) for term in self.image_token_terms]


def visual_grids_differ(student_counts: Tensor, teacher_counts: Tensor | None) -> str:
    teacher = teacher_counts.tolist() if teacher_counts is not None else "none"
    return (f"visual-token KD and relation KD need the Teacher to expand each image into the same image tokens as "
            f"the Student; image tokens per image: Student {student_counts.tolist()}, Teacher {teacher}. "
            "Set visual_kd and relation_kd to 0 for this pair (response KD aligns by the assistant text)")


def aligned_response_hidden(teacher: TeacherOutputs, student_positions: Tensor) -> Tensor:
    """The Teacher's hidden states at its response positions, row by row in the Student's order."""
    teacher_positions = response_mask(teacher.labels)
    student_counts, teacher_counts = student_positions.sum(1), teacher_positions.sum(1)
    if not torch.equal(student_counts, teacher_counts):
        raise ValueError(
            f"Teacher and Student inputs hold different numbers of response tokens per sample "
            f"({teacher_counts.tolist()} vs {student_counts.tolist()}): they must encode the same conversations"
        )
    return teacher.hidden[teacher_positions]


def _to(signal: SparseTeacherSignal, device: torch.device) -> SparseTeacherSignal:
    return SparseTeacherSignal(
        signal.token_ids.to(device), signal.log_probs.to(device), signal.tail_log_mass.to(device)
    )
