import pytest
import torch
import torch.nn.functional as F

from llava_ckd.data.conversations import IGNORE_INDEX
from llava_ckd.distill.divergences import DIVERGENCES, DivergenceSpec
from llava_ckd.distill.heads import fused_head_loss, head_kd_loss
from tests.tolerance import assert_float32_close

TOKENS, STUDENT_DIM, TEACHER_DIM = 37, 8, 12
STUDENT_ROWS, TEACHER_ROWS, VOCAB = 53, 61, 50
LOSS = (TEACHER_DIM, VOCAB, TOKENS)
"""A loss's reductions: the logits over the width, the divergence over the vocabulary, the sum over positions."""
GRADIENT = (*LOSS, VOCAB)
"""A gradient's: the loss's, then the backward sum over the vocabulary (for hidden states) or the positions (for the
head, TOKENS < VOCAB)."""


def make_inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(TOKENS, STUDENT_DIM, generator=generator).requires_grad_()
    student_weight = torch.randn(STUDENT_ROWS, STUDENT_DIM, generator=generator).requires_grad_()
    teacher_hidden = torch.randn(TOKENS, TEACHER_DIM, generator=generator)
    teacher_weight = torch.randn(TEACHER_ROWS, TEACHER_DIM, generator=generator)
    labels = torch.randint(VOCAB, (TOKENS,), generator=generator)
    labels[::5] = IGNORE_INDEX
    return student_hidden, student_weight, teacher_hidden, teacher_weight, labels


def naive_losses(student_hidden, student_weight, teacher_hidden, teacher_weight, spec, labels):
    """The plain way: full logits of both models, sliced to the shared vocabulary, then the loss."""
    student_logits = (student_hidden @ student_weight.T)[:, :VOCAB]
    teacher_logits = (teacher_hidden @ teacher_weight.T)[:, :VOCAB]
    kd_sum = spec(student_logits, teacher_logits).sum()
    ce_sum = F.cross_entropy(student_logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return kd_sum, ce_sum


def gradients(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_kd_loss_and_gradients_equal_the_naive_ones(name, temperature):
    student_hidden, student_weight, teacher_hidden, teacher_weight, labels = make_inputs()
    spec = DivergenceSpec(name=name, temperature=temperature, beta=0.3, alpha=0.2)

    fused = head_kd_loss(student_hidden, student_weight, teacher_hidden, teacher_weight, spec, VOCAB, chunk_size=8)
    naive_kd, _ = naive_losses(student_hidden, student_weight, teacher_hidden, teacher_weight, spec, labels)

    assert fused.ce_sum is None
    assert_float32_close(fused.loss, naive_kd, *LOSS)
    assert_float32_close(fused.kd_sum, naive_kd.detach(), *LOSS)
    for fused_grad, naive_grad in zip(
        gradients(fused.loss, student_hidden, student_weight),
        gradients(naive_kd, student_hidden, student_weight),
        strict=True,
    ):
        assert_float32_close(fused_grad, naive_grad, *GRADIENT)


@pytest.mark.parametrize(("chunk_size", "loss_chunk_size"), [(1, 1), (16, 5), (8, 32), (1000, 1000)])
def test_weighted_kd_plus_ce_equals_the_naive_one(chunk_size, loss_chunk_size):
    student_hidden, student_weight, teacher_hidden, teacher_weight, labels = make_inputs(seed=1)
    spec = DivergenceSpec(name="jsd", temperature=2.0)

    fused = head_kd_loss(
        student_hidden,
        student_weight,
        teacher_hidden,
        teacher_weight,
        spec,
        VOCAB,
        chunk_size,
        loss_chunk_size=loss_chunk_size,
        labels=labels,
        kd_weight=0.7,
        ce_weight=0.3,
    )
    naive_kd, naive_ce = naive_losses(student_hidden, student_weight, teacher_hidden, teacher_weight, spec, labels)
    naive = 0.7 * naive_kd + 0.3 * naive_ce

    assert_float32_close(fused.kd_sum, naive_kd.detach(), *LOSS)
    assert_float32_close(fused.ce_sum, naive_ce.detach(), *LOSS)
    assert_float32_close(fused.loss, naive, *LOSS)
    for fused_grad, naive_grad in zip(
        gradients(fused.loss, student_hidden, student_weight),
        gradients(naive, student_hidden, student_weight),
        strict=True,
    ):
        assert_float32_close(fused_grad, naive_grad, *GRADIENT)


def test_backward_scales_by_the_incoming_gradient():
    student_hidden, student_weight, teacher_hidden, teacher_weight, labels = make_inputs()
    spec = DivergenceSpec()
    fused = head_kd_loss(student_hidden, student_weight, teacher_hidden, teacher_weight, spec, VOCAB, 8)
    naive_kd, _ = naive_losses(student_hidden, student_weight, teacher_hidden, teacher_weight, spec, labels)

    (fused_grad,) = gradients(fused.loss / 123.0, student_hidden)
    (naive_grad,) = gradients(naive_kd / 123.0, student_hidden)
    assert_float32_close(fused_grad, naive_grad, *GRADIENT)


def test_teacher_and_padded_student_rows_get_no_gradient():
    student_hidden, student_weight, teacher_hidden, teacher_weight, _ = make_inputs()
    teacher_hidden.requires_grad_()
    teacher_weight.requires_grad_()
    head_kd_loss(
        student_hidden, student_weight, teacher_hidden, teacher_weight, DivergenceSpec(), VOCAB
    ).loss.backward()

    assert teacher_hidden.grad is None and teacher_weight.grad is None
    assert (student_weight.grad[VOCAB:] == 0).all()
    assert (student_weight.grad[:VOCAB] != 0).any()


def test_frozen_student_head_still_trains_the_hidden_states():
    student_hidden, student_weight, teacher_hidden, teacher_weight, labels = make_inputs()
    student_weight.requires_grad_(False)
    spec = DivergenceSpec(name="reverse_kl")
    fused = head_kd_loss(student_hidden, student_weight, teacher_hidden, teacher_weight, spec, VOCAB, 8)
    naive_kd, _ = naive_losses(student_hidden, student_weight, teacher_hidden, teacher_weight, spec, labels)

    fused.loss.backward()
    assert student_weight.grad is None
    assert_float32_close(student_hidden.grad, gradients(naive_kd, student_hidden)[0], *GRADIENT)


def test_a_second_backward_through_a_retained_graph_is_refused():
    student_hidden, student_weight, teacher_hidden, teacher_weight, _ = make_inputs()
    loss = head_kd_loss(student_hidden, student_weight, teacher_hidden, teacher_weight, DivergenceSpec(), VOCAB).loss
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


def test_mismatched_positions_are_refused():
    student_hidden, student_weight, teacher_hidden, teacher_weight, _ = make_inputs()
    with pytest.raises(ValueError, match="same response positions"):
        head_kd_loss(student_hidden, student_weight, teacher_hidden[:-1], teacher_weight, DivergenceSpec(), VOCAB)


def test_vocab_beyond_a_head_is_refused():
    student_hidden, student_weight, teacher_hidden, teacher_weight, _ = make_inputs()
    with pytest.raises(ValueError, match="Teacher head's 61 rows"):
        head_kd_loss(student_hidden, student_weight, teacher_hidden, teacher_weight, DivergenceSpec(), 62)


def test_a_call_with_no_loss_to_compute_is_refused():
    student_hidden, student_weight, *_ = make_inputs()
    with pytest.raises(ValueError, match="no loss to compute"):
        fused_head_loss(student_hidden, student_weight, VOCAB, chunk_kd=None)
