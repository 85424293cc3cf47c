"""Final hidden states of a VLM and the positions the distillation losses read them at.

Position t of a sequence predicts token t+1, so the response positions are those whose *next*
label is not -100. Teacher and Student agree on these positions counted within each row (the
k-th response position of one is the k-th of the other), not on their indices, which shift when
the two models expand an image into different numbers of tokens.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from llava_ckd.data.collator import IMAGE_TOKEN_COUNTS, TEACHER_PREFIX
from llava_ckd.data.conversations import IGNORE_INDEX

NOT_MODEL_INPUTS = ("labels", "sample_index", IMAGE_TOKEN_COUNTS)
"""Batch entries that the losses read but the model does not take (`teacher_*` entries are the Teacher's)."""


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """What the model takes of a batch: ids, attention mask and whatever image inputs its processor made."""
    return {name: value for name, value in batch.items()
            if name not in NOT_MODEL_INPUTS and not name.startswith(TEACHER_PREFIX)}


def next_token_targets(labels: Tensor) -> Tensor:
    """labels [B, L] shifted one position left: entry t is the label that position t predicts."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def response_mask(labels: Tensor) -> Tensor:
    """[B, L] true at the positions that predict a response (label ≠ -100) token."""
    return next_token_targets(labels) != IGNORE_INDEX


def final_hidden_states(vlm: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """The last layer's hidden states [B, L, d] of a `...ForConditionalGeneration` model, without its LM head."""
    present = model_inputs(inputs)
    if "pixel_values" in present:
        present["pixel_values"] = present["pixel_values"].to(vlm.dtype)
    return vlm.model(**present, use_cache=False).last_hidden_state
