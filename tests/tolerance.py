"""Tolerances of float32 results from an error analysis, not from what one machine printed.

A float32 sum of n terms, in any order, is within (n − 1)·u·Σ|xᵢ| of the exact sum, u = 2⁻²⁴ (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2002, §4.2). A computation that chains reductions (a matmul over the width d, a
log-sum-exp over the vocabulary V, a sum over N positions) adds their bounds, and its elementwise steps (exp, log,
division, scaling) add a few units of u each. Two float32 computations of one quantity in different orders (a fused
kernel and the plain one; one kernel set and another; one thread count and another) are each within the bound of
the exact value, so within twice the bound of each other.

The bound is relative to the magnitude of the terms summed. Where a result's elements mix signs (gradients), the
comparison is normwise: the tensor's largest reference element stands in for that magnitude.
"""

from __future__ import annotations

import torch

U = 2.0**-24
"""float32's unit roundoff."""
ELEMENTWISE_ROUNDINGS = 16
"""Roundings of the elementwise steps of one computation (a few per step, a few steps), in units of u."""


def float32_bound(*reductions: int) -> float:
    """The relative error bound of one float32 computation that chains reductions of these lengths."""
    return U * (sum(max(length - 1, 0) for length in reductions) + ELEMENTWISE_ROUNDINGS)


def assert_float32_close(actual: torch.Tensor, reference: torch.Tensor, *reductions: int, reference_exact: bool = False,
                         scale: float | None = None, msg: str | None = None) -> None:
    """`actual` within the bound of `reference`, normwise. Both are float32 computations in their own orders, unless
    `reference_exact` (float64 or by hand: its own error is below float32's by 2⁻²⁹). `scale`: the magnitude of the
    terms summed, where the result is much smaller than they are (a divergence near zero); by default the largest
    reference element."""
    bound = float32_bound(*reductions) * (1 if reference_exact else 2)
    reference = reference.detach().to(actual.dtype)
    if scale is None:
        scale = float(reference.abs().max()) if reference.numel() else 0.0
    torch.testing.assert_close(actual.detach(), reference, rtol=bound, atol=bound * scale, msg=msg)


def _layers(config) -> int:
    """A model's sum of widths through which a gradient flows back: per layer its width and its MLP's."""
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "depth", 0)
    width = getattr(config, "hidden_size", None) or getattr(config, "embed_dim", 0)
    return layers * (width + getattr(config, "intermediate_size", 0) or 0)


def loss_reductions(batch: dict, vocab_size: int, *models) -> tuple[int, ...]:
    """A distillation loss's reductions on `batch`: the LM heads over the widest model, the divergence over the
    vocabulary, the sum over the batch's positions."""
    widths = [model.config.get_text_config().hidden_size for model in models]
    return max(widths), vocab_size, batch["input_ids"].numel()


def gradient_reductions(batch: dict, vocab_size: int, student, *teachers) -> tuple[int, ...]:
    """A loss gradient's: the loss's, then back over the vocabulary, through the Student's layers (and the attention
    over the sequence in each), and the weight gradients' sums over every position of the batch."""
    text, vision = student.config.get_text_config(), getattr(student.config, "vision_config", None)
    through = _layers(text) + text.num_hidden_layers * batch["input_ids"].shape[1]
    if vision is not None:
        through += _layers(vision)
    return (*loss_reductions(batch, vocab_size, student, *teachers), vocab_size, through, batch["input_ids"].numel())


def assert_gradients_close(actual: list, reference: list, *reductions: int) -> None:
    """Two computations of a model's gradients, tensor by tensor, within the bound at the scale of the whole gradient:
    a tensor whose elements cancel to nearly nothing still sums terms of the size of the gradient flowing back."""
    pairs = [(a, b) for a, b in zip(actual, reference, strict=True) if a is not None and b is not None]
    scale = max(float(b.abs().max()) for _, b in pairs)
    for a, b in pairs:
        assert_float32_close(a, b, *reductions, scale=scale)


def term_tolerance(name: str, batch: dict, vocab_size: int, *models) -> dict:
    """`assert_float32_close`'s reductions and scale for one of the Distiller's terms on `batch`. RDist is 1 − a
    cosine: its rounding is relative to the cosine (1), through the Gram over the vocabulary, the two widths of
    H G Hᵀ, and the cosine's sum over the n² relations of the batch's largest image."""
    if name != "relation_kd":
        return {"reductions": loss_reductions(batch, vocab_size, *models), "scale": None}
    width = max(model.config.get_text_config().hidden_size for model in models)
    relations = max(batch["image_token_counts"].tolist()) ** 2
    return {"reductions": (vocab_size, width, width, relations, len(batch["image_token_counts"])), "scale": 1.0}
