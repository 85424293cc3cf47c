"""LLaVA-KD's relation distillation (RDist) on the visual tokens, without the visual logits.

For one sample with visual-token logits Z = H Wᵀ ([n, V], H the final hidden states [n, d], W the
LM head [V, d]), the self-correlation is R = Z Zᵀ = H (Wᵀ W) Hᵀ: only the d×d Gram matrix of the
head is needed, never Z. This is exact when the head has no bias (true of LLaVA's LLMs).
RDist = 1 − cos(vec(R_T), vec(R_S)), averaged over the batch.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from llava_ckd.distill.divergences import at_least_float32


def head_gram(head_weight: Tensor, vocab_size: int) -> Tensor:
    """Wᵀ W [d, d] of the head sliced to the shared vocabulary, in float32 (or wider).

    A frozen head's Gram matrix (the Teacher's; the Student's while only the projector trains)
    can be computed once and reused for every step.
    """
    weight = at_least_float32(head_weight[:vocab_size])
    return weight.T @ weight


def self_correlation(hidden: Tensor, gram: Tensor) -> Tensor:
    """R = H G Hᵀ [batch, n, n] from hidden states [batch, n, d] and the head's Gram matrix."""
    hidden = at_least_float32(hidden)
    return hidden @ gram @ hidden.transpose(-1, -2)


def rdist_loss(student_hidden: Tensor, student_gram: Tensor, teacher_hidden: Tensor, teacher_gram: Tensor) -> Tensor:
    """Mean over the batch of 1 − cos(vec(R_T), vec(R_S)); hidden states are [batch, n_visual, d].

    Both models must see the same number of visual tokens (same vision tower and resolution).
    The Teacher side gets no gradient.
    """
    if student_hidden.shape[:2] != teacher_hidden.shape[:2]:
        raise ValueError(
            "RDist needs the same [batch, n_visual] for both models: "
            f"Student {tuple(student_hidden.shape[:2])}, Teacher {tuple(teacher_hidden.shape[:2])}"
        )
    student_relation = self_correlation(student_hidden, student_gram).flatten(1)
    teacher_relation = self_correlation(teacher_hidden.detach(), teacher_gram.detach()).flatten(1)
    return (1 - F.cosine_similarity(student_relation, teacher_relation, dim=1)).mean()
