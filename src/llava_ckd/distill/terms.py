"""The loss terms a stage weighs, as a list; each term is a registered class that says what it reads.

    losses:
      - {term: ce, weight: 1.0}                                 # the dataset's answer tokens
      - {term: response_kd, weight: 1.0, divergence: {name: jsd, beta: 0.5}}
      - {term: visual_kd, weight: 0.5}                          # the stage's `divergence` unless the term names one
      - {term: relation_kd, weight: 0.5}

The mapping form, `losses: {ce: 1, response_kd: 1, visual_kd: 0, relation_kd: 0}`, reads as that list: a missing
name takes its old default (ce and response_kd 1, the others 0) and a zero weight leaves the term out.

A term declares the Teacher signals it needs (`Need`), which stage validation checks against the Teacher the stage
has. Terms on the response tokens (ce, response_kd) run in one fused pass over the Student's LM head and name the
weight they pass to it; the image-token terms compute their value from `ImageTokenStates`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Annotated, ClassVar, Literal, NamedTuple, Union

import torch
from pydantic import BaseModel, Field, TypeAdapter, model_validator
from torch import Tensor

from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.heads import DEFAULT_LOSS_CHUNK_SIZE, head_kd_loss
from llava_ckd.distill.relation import head_gram, rdist_loss
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.models.source import Strict

SOFTMAX_PART_ELEMENTS = DEFAULT_LOSS_CHUNK_SIZE * 151_936
"""Logits per softmax part: the tuned default's at Qwen2.5's vocabulary (about 10 MB in fp32)."""


def loss_chunk_size(vocab_size: int) -> int:
    """Rows per softmax part of the fused heads: small vocabularies take more rows, for fewer passes."""
    return max(DEFAULT_LOSS_CHUNK_SIZE, SOFTMAX_PART_ELEMENTS // vocab_size)


class Need(Enum):
    """A Teacher signal a term reads. Cached signals hold `ANSWER_DISTRIBUTION` only."""

    ANSWER_DISTRIBUTION = "the Teacher's next-token distribution at the answer tokens"
    IMAGE_TOKEN_STATES = "the Teacher's hidden states at image tokens paired one for one with the Student's"


class ImageTokenStates(NamedTuple):
    """Both models' final hidden states at their image tokens, image after image, and what they are averaged over."""

    student: Tensor
    student_head: Tensor
    teacher: Tensor
    teacher_head: Tensor
    online_teacher: OnlineTeacher
    tokens_per_image: list[int]
    image_tokens: Tensor
    images: Tensor
    vocab_size: int
    chunk_size: int


def per(total: Tensor, count: Tensor | int) -> Tensor:
    """A sum over one micro-batch divided by its count over the accumulation window (at least 1)."""
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


TERMS: dict[str, type[LossTerm]] = {}


class LossTerm(Strict):
    term: str
    """The term's registered name."""
    weight: float = Field(1.0, gt=0)
    """The term's weight in the stage's loss."""

    needs: ClassVar[frozenset[Need]] = frozenset()

    @property
    def name(self) -> str:
        return self.term


class HeadTerm(LossTerm):
    """A term on the answer tokens, computed in the fused pass over the Student's LM head."""

    head_weight: ClassVar[str]
    """The fused head's argument this term's weight goes to."""


class ImageTokenTerm(LossTerm):
    """A term on the image tokens, paired one for one between the two models."""

    needs: ClassVar[frozenset[Need]] = frozenset({Need.IMAGE_TOKEN_STATES})

    def value(self, states: ImageTokenStates, divergence: DivergenceSpec) -> Tensor:
        """The term's value on one micro-batch, normalised over the accumulation window; `divergence` is the
        stage's unless the term names its own."""
        raise NotImplementedError


def registered(term: type[LossTerm]) -> type[LossTerm]:
    """Adds a term class to `TERMS` under the name its `term` field holds."""
    TERMS[term.model_fields["term"].default] = term
    return term


@registered
class CrossEntropy(HeadTerm):
    """Cross-entropy of the Student on the dataset's answer tokens."""

    term: Literal["ce"] = "ce"
    head_weight: ClassVar[str] = "ce_weight"


@registered
class ResponseKD(HeadTerm):
    """The divergence between the Teacher's and the Student's next-token distributions at the answer tokens."""

    term: Literal["response_kd"] = "response_kd"
    divergence: DivergenceSpec | None = None
    """This term's divergence (default: the stage's)."""
    needs: ClassVar[frozenset[Need]] = frozenset({Need.ANSWER_DISTRIBUTION})
    head_weight: ClassVar[str] = "kd_weight"


@registered
class VisualKD(ImageTokenTerm):
    """The divergence between the two models' LM-head distributions at the image tokens (LLaVA-KD's visual KD)."""

    term: Literal["visual_kd"] = "visual_kd"
    divergence: DivergenceSpec | None = None
    """This term's divergence (default: the stage's)."""

    def value(self, states: ImageTokenStates, divergence: DivergenceSpec) -> Tensor:
        visual = head_kd_loss(states.student, states.student_head, states.teacher, states.teacher_head, divergence,
                              states.vocab_size, states.chunk_size,
                              loss_chunk_size=loss_chunk_size(states.vocab_size))
        return per(visual.loss, states.image_tokens)


@registered
class RelationKD(ImageTokenTerm):
    """RDist: 1 − cosine of the two models' image-token self-correlations, per image (LLaVA-KD's relation KD)."""

    term: Literal["relation_kd"] = "relation_kd"

    def value(self, states: ImageTokenStates, divergence: DivergenceSpec) -> Tensor:
        student_gram = head_gram(states.student_head, states.vocab_size)
        teacher_gram = states.online_teacher.gram(states.teacher_head, states.vocab_size)
        relation = sum(
            rdist_loss(ours[None], student_gram, theirs[None], teacher_gram)
            for ours, theirs in zip(states.student.split(states.tokens_per_image),
                                    states.teacher.split(states.tokens_per_image), strict=True)
        )
        return per(relation, states.images)


AnyTerm = Annotated[Union[tuple(TERMS.values())], Field(discriminator="term")]  # noqa: UP007 (built from TERMS)
"""Any registered term, told apart by its `term` field."""
_TERMS_LIST = TypeAdapter(tuple[AnyTerm, ...])


class MappingForm(BaseModel, extra="forbid", frozen=True):
    """`losses` as a mapping from term name to weight, with the defaults recipes have always had."""

    ce: float = Field(1.0, ge=0)
    response_kd: float = Field(1.0, ge=0)
    visual_kd: float = Field(0.0, ge=0)
    relation_kd: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> MappingForm:
        if not any(self.model_dump().values()):
            raise ValueError("every loss weight is 0: nothing to train on")
        return self

    def as_list(self) -> list[dict]:
        return [{"term": name, "weight": weight} for name, weight in self.model_dump().items() if weight]


def as_list(losses: object) -> object:
    """The list form of `losses`: a mapping is read as `MappingForm`; anything else is left to validation."""
    return MappingForm.model_validate(losses).as_list() if isinstance(losses, dict) else losses


def loss_terms(losses: object) -> tuple[LossTerm, ...]:
    """`losses` as a recipe writes them (the list or the mapping form, or terms already), validated."""
    return checked(_TERMS_LIST.validate_python(as_list(losses)))


def checked(terms: Sequence[LossTerm]) -> tuple[LossTerm, ...]:
    """The terms, refused when empty or when one is listed twice."""
    if not terms:
        raise ValueError("no loss term: nothing to train on")
    names = [term.name for term in terms]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)}: a term may be listed once")
    return tuple(terms)


CACHED_SIGNALS = frozenset({Need.ANSWER_DISTRIBUTION})
"""What a cached Teacher holds."""


def unmet_needs(terms: Iterable[LossTerm], held: frozenset[Need]) -> str | None:
    """Which terms read a signal beyond `held`, in words, or None when every need is met."""
    unmet = [f"{term.name} reads {need.value}" for term in terms for need in sorted(term.needs - held, key=str)]
    return "; ".join(unmet) or None


def needs_of(terms: Iterable[LossTerm]) -> frozenset[Need]:
    return frozenset().union(*(term.needs for term in terms))


def term_named(terms: Iterable[LossTerm], name: str) -> LossTerm | None:
    return next((term for term in terms if term.name == name), None)
