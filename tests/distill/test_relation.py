import pytest
import torch
import torch.nn.functional as F

from llava_ckd.distill.relation import head_gram, rdist_loss
from tests.tolerance import assert_float32_close, float32_bound

BATCH, VISUAL_TOKENS, VOCAB = 3, 7, 40
RDIST = (VOCAB, 10, VISUAL_TOKENS**2, BATCH)
"""RDist's reductions: the Gram over the vocabulary (the naive form: logits over the width 10, then Z Zᵀ over the
vocabulary), the cosine over the n² relations, the mean over the batch."""


def make_inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(BATCH, VISUAL_TOKENS, 6, generator=generator).requires_grad_()
    student_weight = torch.randn(45, 6, generator=generator).requires_grad_()
    teacher_hidden = torch.randn(BATCH, VISUAL_TOKENS, 10, generator=generator)
    teacher_weight = torch.randn(48, 10, generator=generator)
    return student_hidden, student_weight, teacher_hidden, teacher_weight


def naive_rdist(student_hidden, student_weight, teacher_hidden, teacher_weight):
    """LLaVA-KD's form: the visual-token logits Z, their self-correlation Z Zᵀ, 1 − cosine."""
    student_logits = (student_hidden @ student_weight.T)[..., :VOCAB]
    teacher_logits = (teacher_hidden @ teacher_weight.T)[..., :VOCAB]
    student_relation = (student_logits @ student_logits.transpose(1, 2)).flatten(1)
    teacher_relation = (teacher_logits @ teacher_logits.transpose(1, 2)).flatten(1)
    return (1 - F.cosine_similarity(student_relation, teacher_relation, dim=1)).mean()


def gram_rdist(student_hidden, student_weight, teacher_hidden, teacher_weight):
    return rdist_loss(
        student_hidden, head_gram(student_weight, VOCAB), teacher_hidden, head_gram(teacher_weight, VOCAB)
    )


def test_gram_form_equals_the_naive_form_in_value_and_gradients():
    inputs = make_inputs()
    student_hidden, student_weight = inputs[:2]
    fused, naive = gram_rdist(*inputs), naive_rdist(*inputs)

    assert naive > 1e-2
    assert_float32_close(fused, naive, *RDIST)
    fused_grads = torch.autograd.grad(fused, (student_hidden, student_weight))
    naive_grads = torch.autograd.grad(naive, (student_hidden, student_weight))
    for fused_grad, naive_grad in zip(fused_grads, naive_grads, strict=True):
        assert_float32_close(fused_grad, naive_grad, *RDIST, VISUAL_TOKENS**2, VOCAB)  # and back through them


def test_zero_for_identical_models_and_scale_invariant():
    student_hidden, student_weight, _, _ = make_inputs()
    loss = rdist_loss(
        student_hidden, head_gram(student_weight, VOCAB), 3 * student_hidden, head_gram(student_weight, VOCAB)
    )
    torch.testing.assert_close(loss, torch.tensor(0.0), rtol=0, atol=float32_bound(VOCAB, 6, VISUAL_TOKENS**2))


def test_padded_head_rows_are_ignored():
    student_hidden, student_weight, teacher_hidden, teacher_weight = make_inputs()
    repadded = teacher_weight.clone()
    repadded[VOCAB:] = 100.0
    torch.testing.assert_close(
        gram_rdist(student_hidden, student_weight, teacher_hidden, repadded),
        gram_rdist(student_hidden, student_weight, teacher_hidden, teacher_weight),
    )


def test_teacher_gets_no_gradient():
    student_hidden, student_weight, teacher_hidden, teacher_weight = make_inputs()
    teacher_hidden.requires_grad_()
    gram_rdist(student_hidden, student_weight, teacher_hidden, teacher_weight).backward()
    assert teacher_hidden.grad is None
    assert student_hidden.grad.abs().sum() > 0


def test_different_visual_token_counts_are_refused():
    student_hidden, student_weight, teacher_hidden, teacher_weight = make_inputs()
    with pytest.raises(ValueError, match="same \\[batch, n_visual\\]"):
        gram_rdist(student_hidden, student_weight, teacher_hidden[:, :-1], teacher_weight)
