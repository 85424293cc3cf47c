import math

import pytest
import torch
from pydantic import ValidationError

from llava_ckd.distill.divergences import (
    DIVERGENCES,
    DivergenceSpec,
    forward_kl,
    jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    tv,
)
from tests.tolerance import assert_float32_close

STUDENT_LOGITS = [[0.0, 1.0, 2.0], [1.5, -0.5, 0.25]]
TEACHER_LOGITS = [[2.0, 0.5, -1.0], [1.0, 1.0, -2.0]]
KL_TYPE = sorted(set(DIVERGENCES) - {"tv"})  # multiplied by τ²; TV is not
LOG_PROBABILITIES = 20.0
"""The magnitude of the log-probabilities these logits give (|log p| ≤ the logits' range plus log V, under 20 for
logits of a few units), which a divergence sums with weights up to 1: its rounding is relative to it."""


def temperature_factor(name, temperature):
    return 1.0 if name == "tv" else temperature**2


def softmax(logits, temperature):
    exps = [math.exp(x / temperature) for x in logits]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def mix(weight_p, p, q):
    return [weight_p * pi + (1 - weight_p) * qi for pi, qi in zip(p, q, strict=True)]


def by_hand(name, p_s, p_t):
    """The divergences' definitions, on python floats."""
    return {
        "forward_kl": lambda: kl(p_t, p_s),
        "reverse_kl": lambda: kl(p_s, p_t),
        "jsd": lambda: 0.3 * kl(p_t, mix(0.3, p_t, p_s)) + 0.7 * kl(p_s, mix(0.3, p_t, p_s)),
        "tv": lambda: 0.5 * sum(abs(t - s) for s, t in zip(p_s, p_t, strict=True)),
        "skew_forward_kl": lambda: kl(p_t, mix(0.2, p_t, p_s)),
        "skew_reverse_kl": lambda: kl(p_s, mix(0.2, p_s, p_t)),
    }[name]()


def random_logits(rows=5, vocab=11, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=generator, dtype=dtype) * 2


def test_registry_holds_the_six_divergences():
    assert set(DIVERGENCES) == {"forward_kl", "reverse_kl", "jsd", "tv", "skew_forward_kl", "skew_reverse_kl"}


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_matches_hand_computed_values(name, temperature):
    spec = DivergenceSpec(name=name, temperature=temperature, beta=0.3, alpha=0.2)
    expected = [
        temperature_factor(name, temperature) * by_hand(name, softmax(s, temperature), softmax(t, temperature))
        for s, t in zip(STUDENT_LOGITS, TEACHER_LOGITS, strict=True)
    ]
    actual = spec(torch.tensor(STUDENT_LOGITS), torch.tensor(TEACHER_LOGITS))
    assert actual.shape == (2,)
    assert_float32_close(actual, torch.tensor(expected, dtype=torch.float64), 3, reference_exact=True,
                         scale=LOG_PROBABILITIES)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_zero_when_distributions_are_equal(name):
    logits = random_logits()
    shifted = logits + 3.0  # softmax is shift-invariant: same distribution
    loss = DivergenceSpec(name=name, temperature=2.0)(shifted, logits)
    # the two log-softmaxes round apart: the divergence is their difference over 11 tokens, at their magnitude
    assert_float32_close(loss, torch.zeros(5), 11, scale=LOG_PROBABILITIES)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_positive_when_distributions_differ(name):
    loss = DivergenceSpec(name=name)(random_logits(seed=1), random_logits(seed=2))
    assert (loss > 1e-3).all()


@pytest.mark.parametrize("name", KL_TYPE)
def test_temperature_divides_logits_and_scales_loss_by_its_square(name):
    student, teacher, tau = random_logits(seed=1), random_logits(seed=2), 3.0
    tempered = DivergenceSpec(name=name, temperature=tau)(student, teacher)
    plain = DivergenceSpec(name=name)(student / tau, teacher / tau)
    assert_float32_close(tempered, tau**2 * plain, 11, scale=tau**2 * LOG_PROBABILITIES)


def test_tv_at_temperature_4_is_the_plain_tv_of_the_softened_distributions_within_0_and_1():
    student, teacher, tau = random_logits(seed=3) * 5, random_logits(seed=4) * 5, 4.0
    tempered = tv(student, teacher, temperature=tau)
    assert ((tempered >= 0) & (tempered <= 1)).all()
    by_hand_values = [
        0.5 * sum(abs(t - s) for s, t in zip(softmax(s_row, tau), softmax(t_row, tau), strict=True))
        for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True)
    ]
    assert_float32_close(tempered, torch.tensor(by_hand_values, dtype=torch.float64), 3, reference_exact=True)
    torch.testing.assert_close(DivergenceSpec(name="tv", temperature=tau)(student, teacher), tempered)
    # opposite one-hot-like distributions: TV near its maximum 1, and never above it whatever τ
    far_student, far_teacher = torch.tensor([[40.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 40.0]])
    assert 0.9 < tv(far_student, far_teacher, temperature=tau).item() <= 1.0
    # the KLs keep their τ² factor
    plain_kl = forward_kl(student / tau, teacher / tau)
    assert_float32_close(forward_kl(student, teacher, temperature=tau), tau**2 * plain_kl, 3,
                         scale=tau**2 * LOG_PROBABILITIES)


def test_jsd_small_beta_is_forward_kl_up_to_the_factor_beta():
    student, teacher = random_logits(seed=1, dtype=torch.float64), random_logits(seed=2, dtype=torch.float64)
    beta = 1e-6
    torch.testing.assert_close(jsd(student, teacher, beta=beta) / beta, forward_kl(student, teacher), rtol=1e-4, atol=0)


def test_jsd_beta_near_one_is_reverse_kl_up_to_the_factor_one_minus_beta():
    student, teacher = random_logits(seed=1, dtype=torch.float64), random_logits(seed=2, dtype=torch.float64)
    beta = 1 - 1e-6
    torch.testing.assert_close(
        jsd(student, teacher, beta=beta) / (1 - beta), reverse_kl(student, teacher), rtol=1e-4, atol=0
    )


def test_jsd_at_beta_zero_and_one_is_forward_and_reverse_kl():
    student, teacher = random_logits(seed=1), random_logits(seed=2)
    torch.testing.assert_close(jsd(student, teacher, beta=0.0), forward_kl(student, teacher))
    torch.testing.assert_close(jsd(student, teacher, beta=1.0), reverse_kl(student, teacher))


def test_skew_kls_at_alpha_zero_are_the_plain_kls():
    student, teacher = random_logits(seed=1), random_logits(seed=2)
    torch.testing.assert_close(skew_forward_kl(student, teacher, alpha=0.0), forward_kl(student, teacher))
    torch.testing.assert_close(skew_reverse_kl(student, teacher, alpha=0.0), reverse_kl(student, teacher))


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_stable_on_extreme_logits(name):
    student = torch.tensor([[0.0, 300.0, -300.0], [-1e4, 0.0, 1e4]])
    teacher = torch.tensor([[300.0, 0.0, -300.0], [1e4, 0.0, -1e4]])
    student.requires_grad_()
    loss = DivergenceSpec(name=name)(student, teacher)
    expected = DivergenceSpec(name=name)(student.detach().double(), teacher.double())
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    loss.sum().backward()
    assert torch.isfinite(student.grad).all()


def test_lower_precision_logits_are_computed_in_float32():
    loss = forward_kl(random_logits(seed=1).half(), random_logits(seed=2).half())
    assert loss.dtype == torch.float32


def test_spec_passes_its_shape_parameter_to_the_divergence():
    student, teacher = random_logits(seed=1), random_logits(seed=2)
    torch.testing.assert_close(DivergenceSpec(name="jsd", beta=0.2)(student, teacher), jsd(student, teacher, beta=0.2))
    torch.testing.assert_close(
        DivergenceSpec(name="skew_reverse_kl", alpha=0.4)(student, teacher),
        skew_reverse_kl(student, teacher, alpha=0.4),
    )


@pytest.mark.parametrize(
    "fields", [{"name": "kl"}, {"temperature": 0.0}, {"beta": 1.5}, {"alpha": 1.0}, {"gamma": 1.0}]
)
def test_spec_rejects_invalid_fields(fields):
    with pytest.raises(ValidationError):
        DivergenceSpec(**fields)
