"""An online Teacher: a frozen VLM run on its own view of each batch, in its own dtype, without gradients."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from llava_ckd.data.collator import IMAGE_TOKEN_COUNTS, TEACHER_PREFIX
from llava_ckd.distill.positions import final_hidden_states
from llava_ckd.distill.relation import head_gram
from llava_ckd.engines import full_weight, prepare_teacher


class TeacherOutputs(NamedTuple):
    hidden: Tensor
    """[B, L_teacher, d_teacher] final hidden states."""
    input_ids: Tensor
    labels: Tensor
    image_token_counts: Tensor | None
    """Image tokens of each image, in batch order (None without images)."""


def teacher_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The Teacher's view of a batch: its own `teacher_*` inputs where the collator wrote them, else the Student's."""
    if TEACHER_PREFIX + "input_ids" not in batch:
        return {name: value for name, value in batch.items() if name != "sample_index"}
    return {
        name.removeprefix(TEACHER_PREFIX): value for name, value in batch.items() if name.startswith(TEACHER_PREFIX)
    }


class OnlineTeacher:
    """A frozen Teacher; `place` puts it where the training engine wants it (see `engines.py`)."""

    def __init__(self, model: nn.Module):
        self.model = model.eval().requires_grad_(False)
        self._grams: dict[int, Tensor] = {}

    def place(self, accelerator: Accelerator) -> None:
        self.model = prepare_teacher(self.model, accelerator)

    @contextmanager
    def head_weight(self) -> Iterator[Tensor]:
        """The LM head's weight, whole for the block (gathered when the engine shards it)."""
        with full_weight(self.model.get_output_embeddings().weight) as weight:
            yield weight

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    def gram(self, head_weight: Tensor, vocab_size: int) -> Tensor:
        """The d×d Gram matrix (see `relation.py`) of the head weight `head_weight()` gives, computed once."""
        if vocab_size not in self._grams:
            self._grams[vocab_size] = head_gram(head_weight, vocab_size)
        return self._grams[vocab_size]

    @torch.no_grad()
    def __call__(self, batch: dict[str, Tensor]) -> TeacherOutputs:
        inputs = teacher_inputs(batch)
        return TeacherOutputs(final_hidden_states(self.model, inputs), inputs["input_ids"], inputs["labels"],
                              inputs.get(IMAGE_TOKEN_COUNTS))
