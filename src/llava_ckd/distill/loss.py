"""Every stage's loss: cross-entropy, plus distillation from one Teacher in a distill stage, as named terms.

    loss = (ce·CE_sum + response_kd·KD_sum) / response tokens        one fused pass over the Student's head
         + visual_kd · KD_sum(image-token positions) / image tokens   online Teacher with the same image tokens
         + relation_kd · Σ_images RDist / images                      idem (LLaVA-KD's relation loss)

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
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from llava_ckd.data.collator import IMAGE_TOKEN_COUNTS
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.heads import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_LOSS_CHUNK_SIZE,
    HeadLosses,
    fused_head_loss,
    head_kd_loss,
)
from llava_ckd.distill.positions import final_hidden_states, next_token_targets, response_mask
from llava_ckd.distill.relation import head_gram, rdist_loss
from llava_ckd.distill.sparse import SparseTeacherSignal, sparse_head_kd_loss
from llava_ckd.distill.teachers import OnlineTeacher, TeacherOutputs
from llava_ckd.engines import run_inside

SOFTMAX_PART_ELEMENTS = DEFAULT_LOSS_CHUNK_SIZE * 151_936
"""Logits per softmax part: the tuned default's at Qwen2.5's vocabulary (about 10 MB in fp32)."""


def loss_chunk_size(vocab_size: int) -> int:
    """Rows per softmax part of the fused heads: small vocabularies take more rows, for fewer passes."""
    return max(DEFAULT_LOSS_CHUNK_SIZE, SOFTMAX_PART_ELEMENTS // vocab_size)


class LossWeights(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ce: float = Field(1.0, ge=0)
    response_kd: float = Field(1.0, ge=0)
    visual_kd: float = Field(0.0, ge=0)
    relation_kd: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> LossWeights:
        if not any((self.ce, self.response_kd, self.visual_kd, self.relation_kd)):
            raise ValueError("every loss weight is 0: nothing to train on")
        return self


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


def _per(total: Tensor, count: Tensor | int) -> Tensor:
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


class Distiller:
    """CE and distillation of a Student from one Teacher, online or cached; CE alone without a Teacher."""

    def __init__(
        self,
        teacher: OnlineTeacher | CachedSignals | None,
        weights: LossWeights,
        divergence: DivergenceSpec,
        vocab_size: int,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ):
        self.teacher = teacher
        self.weights = weights
        self.divergence = divergence
        self.vocab_size = vocab_size
        self.chunk_size = chunk_size

    @classmethod
    def cross_entropy(cls, vocab_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Distiller:
        """The Student's cross-entropy over the first `vocab_size` rows of its head, without full logits."""
        return cls(None, LossWeights(ce=1.0, response_kd=0.0), DivergenceSpec(), vocab_size, chunk_size)

    @property
    def needs_sample_index(self) -> bool:
        return self.teacher is not None and not isinstance(self.teacher, OnlineTeacher)

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
            kd_weight=self.weights.response_kd,
            ce_weight=self.weights.ce,
        )
        if self.teacher is None:
            return self._weighted(fused_head_loss(chunk_kd=None, **head_arguments), counts, {})
        if not isinstance(self.teacher, OnlineTeacher):
            signal = self.teacher.signal(batch["sample_index"].tolist())
            response = sparse_head_kd_loss(signal=_to(signal, hidden.device), **head_arguments)
            return self._weighted(response, counts, {})

        teacher = self.teacher(batch)
        with self.teacher.head_weight() as teacher_head:
            response = head_kd_loss(
                teacher_hidden=aligned_response_hidden(teacher, positions),
                teacher_head_weight=teacher_head,
                spec=self.divergence,
                **head_arguments,
            )
            visual = {}
            if self.weights.visual_kd or self.weights.relation_kd:
                visual = self._visual_terms(student, batch, hidden, teacher, teacher_head, counts)
        return self._weighted(response, counts, visual)

    def _weighted(self, response: HeadLosses, counts: TargetCounts, visual: dict[str, Tensor]) -> LossTerms:
        loss = _per(response.loss, counts.response_tokens)
        terms = {"ce": _per(response.ce_sum, counts.response_tokens)}
        if self.teacher is not None:
            terms["response_kd"] = _per(response.kd_sum, counts.response_tokens)
        for name, term in visual.items():
            loss = loss + getattr(self.weights, name) * term
            terms[name] = term.detach()
        return LossTerms(loss, terms)

    def _visual_terms(
        self,
        student: nn.Module,
        batch: dict[str, Tensor],
        hidden: Tensor,
        teacher: TeacherOutputs,
        teacher_head: Tensor,
        counts: TargetCounts,
    ) -> dict[str, Tensor]:
        """Visual-token KD and RDist, for a Teacher that expands every image into as many tokens as the Student."""
        student_images = batch["input_ids"] == student.config.image_token_id
        if IMAGE_TOKEN_COUNTS not in batch:
            if student_images.any():
                raise ValueError(f"the batch holds image tokens but no {IMAGE_TOKEN_COUNTS} (each image's number of "
                                 "image tokens, which the Collator writes): the visual losses cannot group them")
            return {name: hidden.new_zeros(()) for name in ("visual_kd", "relation_kd") if getattr(self.weights, name)}
        image_counts = batch[IMAGE_TOKEN_COUNTS]
        if teacher.image_token_counts is None or not torch.equal(image_counts, teacher.image_token_counts):
            raise ValueError(visual_grids_differ(image_counts, teacher.image_token_counts))
        teacher_images = teacher.input_ids == self.teacher.image_token_id
        terms = {}
        if self.weights.visual_kd:
            visual = head_kd_loss(
                hidden[student_images],
                student.get_output_embeddings().weight,
                teacher.hidden[teacher_images],
                teacher_head,
                self.divergence,
                self.vocab_size,
                self.chunk_size,
                loss_chunk_size=loss_chunk_size(self.vocab_size),
            )
            terms["visual_kd"] = _per(visual.loss, counts.image_tokens)
        if self.weights.relation_kd:
            student_gram = head_gram(student.get_output_embeddings().weight, self.vocab_size)
            teacher_gram = self.teacher.gram(teacher_head, self.vocab_size)
            per_image = image_counts.tolist()
            relation = sum(
                rdist_loss(ours[None], student_gram, theirs[None], teacher_gram)
                for ours, theirs in zip(hidden[student_images].split(per_image),
                                        teacher.hidden[teacher_images].split(per_image), strict=True)
            )
            terms["relation_kd"] = _per(relation, counts.images)
        return terms


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
