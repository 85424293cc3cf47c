"""The three parts of a VLM (vision tower, projector, LLM) and which of them a stage trains."""

from __future__ import annotations

from torch import nn

PARTS = ("vision", "projector", "llm")

# Parameter-name prefixes per part, for the VLM families whose training we support. LLaVA-OneVision's
# `image_newline` (the learned vector after each row of image features, in the LLM's space) goes with the projector.
_PREFIXES = {
    "vision": ("model.vision_tower.", "model.vision_model.", "model.visual.blocks.", "model.visual.patch_embed.",
               "model.visual.pos_embed."),
    "projector": ("model.multi_modal_projector.", "model.connector.", "model.visual.merger.",
                  "model.visual.deepstack_merger_list.", "model.image_newline"),
    "llm": ("model.language_model.", "model.text_model.", "lm_head."),
}


def part_of(parameter_name: str) -> str:
    for part, prefixes in _PREFIXES.items():
        if parameter_name.startswith(prefixes):
            return part
    raise ValueError(f"parameter {parameter_name!r} belongs to no known part ({', '.join(PARTS)})")


def set_trainable(model: nn.Module, parts: set[str] | list[str]) -> dict[str, int]:
    """Train exactly `parts`, freeze the rest; returns the trainable parameter count per part."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown model parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    trainable = dict.fromkeys(PARTS, 0)
    for name, parameter in model.named_parameters():
        part = part_of(name)
        parameter.requires_grad_(part in parts)
        if part in parts:
            trainable[part] += parameter.numel()
    return trainable
