"""Cached (sparse) Teacher signals: top-k log-probabilities per token plus the tail mass.

One Teacher pass stored this way serves many Student runs, and KD then costs little more than
SFT. The forward KL treats everything outside the top-k as one bucket, the "tail": the Teacher's
tail probability is the stored mass, the Student's is its probability of a token not in the
Teacher's top-k. With k equal to the vocabulary size this is the dense forward KL exactly.
Signals are taken at temperature 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from llava_ckd.distill.divergences import at_least_float32
from llava_ckd.distill.heads import (
    DEFAULT_CHUNK_SIZE,
    HeadLosses,
    HeadLossOptions,
    PartKD,
    fused_head_loss,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack


@dataclass(frozen=True)
class SparseTeacherSignal:
    token_ids: Tensor
    """[N, k] ids (in the shared vocabulary) of the Teacher's k most likely tokens."""
    log_probs: Tensor
    """[N, k] the Teacher's log-probabilities of those tokens."""
    tail_log_mass: Tensor
    """[N] log(1 − Σ top-k probabilities); −inf where the top-k hold all the mass."""

    @classmethod
    def from_logits(cls, teacher_logits: Tensor, k: int) -> SparseTeacherSignal:
        """The top-k signal of Teacher logits [N, V] already sliced to the shared vocabulary."""
        log_probs = F.log_softmax(at_least_float32(teacher_logits.detach()), dim=-1)
        top_log_probs, token_ids = log_probs.topk(k, dim=-1)
        return cls(token_ids, top_log_probs, _log_mass_outside(log_probs, token_ids))

    def __getitem__(self, rows: slice) -> SparseTeacherSignal:
        return SparseTeacherSignal(self.token_ids[rows], self.log_probs[rows], self.tail_log_mass[rows])


def _log_mass_outside(log_probs: Tensor, token_ids: Tensor) -> Tensor:
    """log Σ of the probabilities not at ``token_ids``, summed in log space (no 1 − Σ cancellation)."""
    return log_probs.scatter(-1, token_ids, float("-inf")).logsumexp(dim=-1)


def sparse_forward_kl(student_logits: Tensor, signal: SparseTeacherSignal) -> Tensor:
    """Per-token KL(p_T‖p_S) [N] over the Teacher's top-k tokens and the tail bucket."""
    student_log_probs = F.log_softmax(at_least_float32(student_logits), dim=-1)
    teacher_log_probs = signal.log_probs
    student_at_teacher = student_log_probs.gather(-1, signal.token_ids)
    if signal.token_ids.shape[-1] < student_logits.shape[-1]:
        teacher_log_probs = torch.cat([teacher_log_probs, signal.tail_log_mass[:, None]], dim=-1)
        student_tail = _log_mass_outside(student_log_probs, signal.token_ids)
        student_at_teacher = torch.cat([student_at_teacher, student_tail[:, None]], dim=-1)
    teacher_probs = teacher_log_probs.exp()
    return (torch.special.xlogy(teacher_probs, teacher_probs) - teacher_probs * student_at_teacher).sum(dim=-1)


def sparse_head_kd_loss(
    student_hidden: Tensor,
    student_head_weight: Tensor,
    signal: SparseTeacherSignal,
    vocab_size: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    **options: Unpack[HeadLossOptions],
) -> HeadLosses:
    """``sparse_forward_kl`` summed over the N gathered positions, from the Student's hidden states.

    Chunked like ``heads.head_kd_loss`` (``options``: see ``heads.fused_head_loss``); ``signal`` holds
    the same N positions in the same order.
    """
    if signal.token_ids.shape[0] != student_hidden.shape[0]:
        raise ValueError(
            f"the Teacher signal has {signal.token_ids.shape[0]} positions, the Student {student_hidden.shape[0]}"
        )

    def chunk_kd(rows: slice) -> PartKD:
        chunk_signal = signal[rows]
        return lambda part, student_logits: sparse_forward_kl(student_logits, chunk_signal[part])

    return fused_head_loss(student_hidden, student_head_weight, vocab_size, chunk_kd, chunk_size, **options)
