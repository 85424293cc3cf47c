"""Per-token divergences between Student and Teacher next-token distributions.

Every divergence takes logits ``[..., V]`` of both models and returns the loss per token
``[...]``, computed in float32 (or wider). ``p_T`` is the Teacher's distribution, ``p_S`` the Student's.

The temperature τ divides both logits (softening both distributions). How the loss is then scaled:
- the KL family (``forward_kl``, ``reverse_kl``, ``jsd``, ``skew_forward_kl``, ``skew_reverse_kl``) is
  multiplied by τ² (Hinton et al.): their gradients shrink as 1/τ², so gradient magnitudes stay
  comparable across temperatures;
- ``tv`` is not scaled: it is the plain total variation of the softened distributions, so it stays in
  [0, 1] at every τ (times τ², it would grow with τ up to τ²).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor


def at_least_float32(tensor: Tensor) -> Tensor:
    """The tensor in float32, or as it is when already wider (float64 keeps its precision)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _log_softmax(logits: Tensor, temperature: float) -> Tensor:
    logits = at_least_float32(logits)
    return F.log_softmax(logits / temperature if temperature != 1.0 else logits, dim=-1)


def _log_probs(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    return _log_softmax(student_logits, temperature), _log_softmax(teacher_logits, temperature)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p‖q) over the last dimension, from log-probabilities."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=-1)


def _log_mixture(log_p: Tensor, log_q: Tensor, weight_p: float) -> Tensor:
    """log(w·p + (1−w)·q), computed in log space."""
    if weight_p == 0.0:
        return log_q
    return torch.logaddexp(log_p + math.log(weight_p), log_q + math.log1p(-weight_p))


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """KL(p_T‖p_S): mass-covering; the classic KD loss (LLaVA-KD uses it at τ=1)."""
    student, teacher = _log_probs(student_logits, teacher_logits, temperature)
    return temperature**2 * _kl(teacher, student)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """KL(p_S‖p_T): mode-seeking."""
    student, teacher = _log_probs(student_logits, teacher_logits, temperature)
    return temperature**2 * _kl(student, teacher)


def jsd(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, beta: float = 0.5) -> Tensor:
    """Generalised Jensen-Shannon divergence, TRL's ``generalized_jsd_loss`` convention (GKD).

    With the mixture M = β·p_T + (1−β)·p_S:  JSD(β) = β·KL(p_T‖M) + (1−β)·KL(p_S‖M).
    β = 0.5 is the symmetric JSD. As β→0, JSD(β)/β → KL(p_T‖p_S) and as β→1,
    JSD(β)/(1−β) → KL(p_S‖p_T); the unscaled value itself goes to 0 at both ends, so, like TRL,
    β = 0 is defined as forward KL and β = 1 as reverse KL.
    """
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits, temperature=temperature)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, temperature=temperature)
    student, teacher = _log_probs(student_logits, teacher_logits, temperature)
    mixture = _log_mixture(teacher, student, beta)
    return temperature**2 * (beta * _kl(teacher, mixture) + (1 - beta) * _kl(student, mixture))


def tv(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Total variation distance 0.5·Σ|p_T − p_S| of the τ-softened distributions, in [0, 1] (no τ² factor)."""
    student, teacher = _log_probs(student_logits, teacher_logits, temperature)
    return 0.5 * (teacher.exp() - student.exp()).abs().sum(dim=-1)


def skew_forward_kl(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, alpha: float = 0.1
) -> Tensor:
    """DistiLLM's skew KL: KL(p_T ‖ α·p_T + (1−α)·p_S). α = 0 is forward KL."""
    student, teacher = _log_probs(student_logits, teacher_logits, temperature)
    return temperature**2 * _kl(teacher, _log_mixture(teacher, student, alpha))


def skew_reverse_kl(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, alpha: float = 0.1
) -> Tensor:
    """DistiLLM's skew reverse KL: KL(p_S ‖ α·p_S + (1−α)·p_T). α = 0 is reverse KL."""
    student, teacher = _log_probs(student_logits, teacher_logits, temperature)
    return temperature**2 * _kl(student, _log_mixture(student, teacher, alpha))


DIVERGENCES = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
    "tv": tv,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
}
DivergenceName = Literal["forward_kl", "reverse_kl", "jsd", "tv", "skew_forward_kl", "skew_reverse_kl"]
_SHAPE_PARAMETER = {"jsd": "beta", "skew_forward_kl": "alpha", "skew_reverse_kl": "alpha"}


class DivergenceSpec(BaseModel):
    """Which divergence a recipe uses, with its parameters; calling it gives the per-token loss."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: DivergenceName = "forward_kl"
    """forward_kl (KL(p_T‖p_S)), reverse_kl, jsd, tv, skew_forward_kl or skew_reverse_kl."""
    temperature: float = Field(1.0, gt=0)
    """τ, dividing both models' logits; the KL family is multiplied by τ²."""
    beta: float = Field(0.5, ge=0, le=1)
    """jsd: the Teacher's weight in the mixture."""
    alpha: float = Field(0.1, ge=0, lt=1)
    """skew KL: the target's weight in the mixture."""

    def __call__(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        parameters = {"temperature": self.temperature}
        if self.name in _SHAPE_PARAMETER:
            parameter = _SHAPE_PARAMETER[self.name]
            parameters[parameter] = getattr(self, parameter)
        return DIVERGENCES[self.name](student_logits, teacher_logits, **parameters)
