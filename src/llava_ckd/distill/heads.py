"""KD and CE losses straight from hidden states and LM-head weights, chunk by chunk.

Full logits are ``[tokens, vocab]``: at Qwen2.5's 151,936 rows and 2,048 response tokens that is
1.2 GB per model in fp32, several times over once softmax intermediates and gradients are counted.
Here the heads run only on the positions the loss needs (the caller gathers them), ``chunk_size``
rows at a time, and the softmax-based losses on ``loss_chunk_size`` of those rows at a time. The
gradients w.r.t. the Student's hidden states and head weight are computed chunk by chunk during
the forward pass, so backward just scales them (the idea of Liger-Kernel's fused linear
cross-entropy / JSD, written here in plain torch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from llava_ckd.data.conversations import IGNORE_INDEX
from llava_ckd.distill.divergences import DivergenceSpec, at_least_float32
from llava_ckd.errors import UserError

if TYPE_CHECKING:
    from typing_extensions import Unpack

# Tuned with benchmarks/kd_heads.py (Qwen2.5 vocabulary, CPU): smaller head chunks re-read the
# head weight too often; 16 loss rows keep each softmax intermediate at ~10 MB.
DEFAULT_CHUNK_SIZE = 256
DEFAULT_LOSS_CHUNK_SIZE = 16

PartKD = Callable[[slice, Tensor], Tensor]
"""(rows within a head chunk, the Student's logits of those rows [r, V]) -> per-token KD loss [r]."""
ChunkKD = Callable[[slice], PartKD]
"""Rows of a head chunk -> the KD loss of parts of that chunk (the Teacher's side runs once per chunk)."""


class UnsupportedHead(UserError, ValueError):
    """A model whose logits are not its LM head's plain linear map of the hidden states."""


def check_plain_head(model: torch.nn.Module, role: str) -> None:
    """The fused heads compute logits as hidden @ Wᵀ; refuse a model that changes them after (soft-capping, a
    logit scale, a head bias), whose KD would otherwise be silently wrong."""
    text = model.config.get_text_config()
    changes = [f"{name}={getattr(text, name)}" for name in ("final_logit_softcapping", "logit_scale")
               if getattr(text, name, None) not in (None, 1.0)]
    if getattr(model.get_output_embeddings(), "bias", None) is not None:
        changes.append("a bias in its LM head")
    if changes:
        raise UnsupportedHead(f"{role} {getattr(model, 'name_or_path', '') or type(model).__name__}: its logits are "
                              f"not a plain linear map of the hidden states ({', '.join(changes)}), which the fused "
                              "LM-head losses assume; this model cannot be trained or distilled here")


class HeadLossOptions(TypedDict, total=False):
    """The keyword-only options of ``fused_head_loss``, which the KD-specific wrappers pass on as they are."""

    loss_chunk_size: int
    labels: Tensor | None
    kd_weight: float
    ce_weight: float


class HeadLosses(NamedTuple):
    loss: Tensor
    """kd_weight·kd_sum + ce_weight·ce_sum: the one output that carries gradients."""
    kd_sum: Tensor
    """Sum of the per-token KD loss (detached, for logging)."""
    ce_sum: Tensor | None
    """Sum of the Student's cross-entropy (detached), when labels were given."""


@dataclass(frozen=True)
class _Plan:
    vocab_size: int
    chunk_kd: ChunkKD | None
    kd_weight: float
    ce_weight: float
    chunk_size: int
    loss_chunk_size: int


def _accumulation_dtype(tensor: Tensor) -> torch.dtype:
    return torch.promote_types(tensor.dtype, torch.float32)


def _cross_entropy_sum(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(at_least_float32(logits), labels, ignore_index=IGNORE_INDEX, reduction="sum")


def _no_loss(logits: Tensor) -> Tensor:
    return logits.new_zeros((), dtype=_accumulation_dtype(logits))


def _part_losses(
    logits: Tensor, part_kd: PartKD | None, part: slice, labels: Tensor | None, plan: _Plan, needs_grad: bool
) -> Tensor:
    """[KD sum, CE sum] of some rows of a chunk; with ``needs_grad``, overwrites their logits with
    the loss's gradient."""
    part_logits = logits[part].requires_grad_(needs_grad)
    with torch.set_grad_enabled(needs_grad):
        kd = part_kd(part, part_logits).sum() if part_kd is not None else _no_loss(part_logits)
        ce = _cross_entropy_sum(part_logits, labels[part]) if labels is not None else _no_loss(part_logits)
        loss = plan.kd_weight * kd + plan.ce_weight * ce
    if needs_grad:
        (grad_logits,) = torch.autograd.grad(loss, part_logits)
        part_logits.detach().copy_(grad_logits)
    return torch.stack([kd.detach(), ce.detach()])


def _chunk_losses(
    hidden: Tensor,
    weight: Tensor,
    part_kd: PartKD | None,
    labels: Tensor | None,
    plan: _Plan,
    grad_hidden: Tensor | None,
    grad_weight: Tensor | None,
) -> Tensor:
    """[KD sum, CE sum] of a chunk of rows. Writes d(loss)/d(hidden) into ``grad_hidden`` and adds
    d(loss)/d(weight) to ``grad_weight`` (views of the whole buffers; None when not needed).

    The losses run on ``loss_chunk_size`` rows at a time, so their softmax intermediates stay
    small while the head matmuls run on the larger chunk (fewer passes over the head weight).
    """
    needs_grad = grad_hidden is not None or grad_weight is not None
    logits = hidden @ weight.T
    sums = sum(
        _part_losses(logits, part_kd, slice(start, start + plan.loss_chunk_size), labels, plan, needs_grad)
        for start in range(0, logits.shape[0], plan.loss_chunk_size)
    )
    grad_logits = logits
    if grad_hidden is not None:
        torch.mm(grad_logits, weight, out=grad_hidden)
    if grad_weight is not None:
        grad_weight.addmm_(grad_logits.T.to(grad_weight.dtype), hidden.to(grad_weight.dtype))
    return sums


class _FusedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, head_weight, labels, plan: _Plan):
        needs_hidden_grad, needs_weight_grad = ctx.needs_input_grad[:2]
        weight = head_weight[: plan.vocab_size]
        grad_hidden = torch.empty_like(hidden) if needs_hidden_grad else None
        grad_weight = (
            torch.zeros(head_weight.shape, dtype=_accumulation_dtype(head_weight), device=head_weight.device)
            if needs_weight_grad
            else None
        )
        sums = hidden.new_zeros(2, dtype=_accumulation_dtype(hidden))
        for start in range(0, hidden.shape[0], plan.chunk_size):
            rows = slice(start, start + plan.chunk_size)
            sums += _chunk_losses(
                hidden[rows],
                weight,
                plan.chunk_kd(rows) if plan.chunk_kd is not None else None,
                labels[rows] if labels is not None else None,
                plan,
                grad_hidden[rows] if needs_hidden_grad else None,
                grad_weight[: plan.vocab_size] if needs_weight_grad else None,
            )
        if grad_weight is not None:
            grad_weight = grad_weight.to(head_weight.dtype)
        ctx.grads = (grad_hidden, grad_weight)
        kd_sum, ce_sum = sums.unbind()
        ctx.mark_non_differentiable(kd_sum, ce_sum)
        return plan.kd_weight * kd_sum + plan.ce_weight * ce_sum, kd_sum, ce_sum

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, _grad_kd_sum, _grad_ce_sum):
        if ctx.grads is None:
            raise RuntimeError("the fused head loss keeps its gradients for one backward pass only")
        grad_hidden, grad_weight = ctx.grads
        ctx.grads = None
        for grad in (grad_hidden, grad_weight):
            if grad is not None:
                grad.mul_(grad_loss)
        return grad_hidden, grad_weight, None, None


def fused_head_loss(
    student_hidden: Tensor,
    student_head_weight: Tensor,
    vocab_size: int,
    chunk_kd: ChunkKD | None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    loss_chunk_size: int = DEFAULT_LOSS_CHUNK_SIZE,
    labels: Tensor | None = None,
    kd_weight: float = 1.0,
    ce_weight: float = 1.0,
) -> HeadLosses:
    """Sum of a KD loss (and optionally the Student's CE) over ``student_hidden`` [N, d]'s rows.

    The Student's head weight [V_rows, d] is sliced to its first ``vocab_size`` rows (the shared
    tokenizer vocabulary, see ``vocab.py``); CE is over that vocabulary too. The head runs on
    ``chunk_size`` rows at a time, the losses on ``loss_chunk_size`` rows at a time; ``chunk_kd``
    supplies the KD loss (see ``ChunkKD``; None: cross-entropy alone, a fused linear cross-entropy).
    Sums, not means: the caller divides by the number of target tokens in the whole
    gradient-accumulation window. The gradients are computed in the forward pass and handed out
    once: a second backward through a retained graph is refused.
    """
    if chunk_kd is None and labels is None:
        raise ValueError("neither a KD loss (chunk_kd) nor labels for cross-entropy: no loss to compute")
    if chunk_size < 1 or loss_chunk_size < 1:
        raise ValueError(f"chunk sizes must be positive, got {chunk_size} and {loss_chunk_size}")
    if vocab_size > student_head_weight.shape[0]:
        raise ValueError(f"vocab_size {vocab_size} exceeds the Student head's {student_head_weight.shape[0]} rows")
    if labels is not None and labels.shape != student_hidden.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} must be [N] for hidden {tuple(student_hidden.shape)}")
    plan = _Plan(vocab_size, chunk_kd, kd_weight, ce_weight, chunk_size, loss_chunk_size)
    loss, kd_sum, ce_sum = _FusedHeadLoss.apply(student_hidden, student_head_weight, labels, plan)
    return HeadLosses(loss, kd_sum, ce_sum if labels is not None else None)


def head_kd_loss(
    student_hidden: Tensor,
    student_head_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_head_weight: Tensor,
    spec: DivergenceSpec,
    vocab_size: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    **options: Unpack[HeadLossOptions],
) -> HeadLosses:
    """Response-token KD from an online Teacher: ``spec`` summed over the N gathered positions.

    ``student_hidden`` [N, ds] and ``teacher_hidden`` [N, dt] are the final hidden states at the
    same N target positions; the heads [Vs, ds] and [Vt, dt] are compared over their first
    ``vocab_size`` rows. The Teacher side gets no gradient. See ``fused_head_loss`` for ``options``.
    """
    if teacher_hidden.shape[0] != student_hidden.shape[0]:
        raise ValueError(
            f"Teacher has {teacher_hidden.shape[0]} positions, Student {student_hidden.shape[0]}: "
            "gather both at the same response positions"
        )
    if vocab_size > teacher_head_weight.shape[0]:
        raise ValueError(f"vocab_size {vocab_size} exceeds the Teacher head's {teacher_head_weight.shape[0]} rows")
    teacher_hidden = teacher_hidden.detach()
    teacher_weight = teacher_head_weight.detach()[:vocab_size]

    def chunk_kd(rows: slice) -> PartKD:
        teacher_logits = teacher_hidden[rows] @ teacher_weight.T
        return lambda part, student_logits: spec(student_logits, teacher_logits[part])

    return fused_head_loss(student_hidden, student_head_weight, vocab_size, chunk_kd, chunk_size, **options)
