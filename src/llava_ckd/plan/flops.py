"""FLOPs of a stage: the Student's forward and backward (through what the gradient passes, weight gradients of what
trains, the recomputed forward under activation checkpointing), the online Teacher's forward, the cached-signals
pass. Matmuls count 2 FLOPs per multiply-add; attention counts its score and value products (causal in the LLM,
2·s²·h per layer and sample; bidirectional in the vision tower, 4·p·k·h per layer and image of p tokens attending to
k keys each: all p, or a window's tokens under window attention). The vision tower runs on its patches, the projector
on the image tokens (a patch merger: one per merged group). The fused heads run at the loss positions only.
"""

from __future__ import annotations

from llava_ckd.models.shapes import ModelShape
from llava_ckd.plan.tokens import Tokens


def forward_flops(model: ModelShape, tokens: Tokens, head_positions: float) -> dict[str, float]:
    """Forward FLOPs per part over `tokens` (their images included), the LM head at `head_positions`."""
    patches = tokens.images * model.vision_patches
    return {
        "vision": (2 * model.parts["vision"] + 4 * model.vision_attended * model.vision_hidden) * patches,
        "projector": 2 * model.parts["projector"] * tokens.images * model.image_tokens,
        "llm": 2 * model.llm_matmul * tokens.tokens + 2 * model.layers * model.hidden * tokens.squares,
        "head": 2 * model.head_rows * model.hidden * head_positions,
    }


def training_flops(model: ModelShape, tokens: Tokens, trained: tuple[str, ...], checkpointing: bool,
                   head_positions: float) -> float:
    """Forward + backward of the trained model: input gradients flow down to the lowest trained part, weight
    gradients where parameters train (each as much as the forward of that part); a checkpointed LLM runs its
    forward twice."""
    forward = forward_flops(model, tokens, head_positions)
    order = ("vision", "projector", "llm")  # bottom to top; the head belongs to the LLM
    lowest = min((order.index(part) for part in trained), default=len(order))
    backward = 0.0
    for index, part in enumerate(order):
        flops = forward[part] + (forward["head"] if part == "llm" else 0.0)
        backward += flops * ((index > lowest) + (part in trained))
    recompute = forward["llm"] if checkpointing else 0.0
    return sum(forward.values()) + backward + recompute


def inference_flops(model: ModelShape, tokens: Tokens, head_positions: float) -> float:
    return sum(forward_flops(model, tokens, head_positions).values())
