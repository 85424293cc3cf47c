"""Final hidden states of a LLaVA model and the positions the distillation losses read them at.

Position t of a sequence predicts token t+1, so the response positions are those whose *next*
label is not -100. Teacher and Student agree on these positions counted within each row (the
k-th response position of one is the k-th of the other), not on their indices, which shift when
the two models expand an image into different numbers of tokens.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from llava_ckd.distill.heads import IGNORE_INDEX

MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values")


def next_token_targets(labels: Tensor) -> Tensor:
    """labels [B, L] shifted one position left: entry t is the label that position t predicts."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def response_mask(labels: Tensor) -> Tensor:
    """[B, L] true at the positions that predict a response (label ≠ -100) token."""
    return next_token_targets(labels) != IGNORE_INDEX


def final_hidden_states(vlm: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """The last layer's hidden states [B, L, d] of a `...ForConditionalGeneration` model, without its LM head."""
    present = {name: inputs[name] for name in MODEL_INPUTS if name in inputs}
    if "pixel_values" in present:
        present["pixel_values"] = present["pixel_values"].to(vlm.dtype)
    return vlm.model(**present, use_cache=False).last_hidden_state
