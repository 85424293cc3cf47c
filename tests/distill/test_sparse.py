import math

import pytest
import torch

from llava_ckd.data.conversations import IGNORE_INDEX
from llava_ckd.distill.divergences import forward_kl
from llava_ckd.distill.sparse import SparseTeacherSignal, sparse_forward_kl, sparse_head_kd_loss
from tests.tolerance import assert_float32_close

TOKENS, VOCAB = 9, 30


def random_logits(seed, rows=TOKENS, vocab=VOCAB, scale=2.0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=generator, dtype=dtype) * scale


def test_signal_holds_top_k_log_probs_and_the_tail_mass():
    teacher = random_logits(seed=0)
    signal = SparseTeacherSignal.from_logits(teacher, k=4)

    probs = teacher.softmax(-1)
    top_probs, top_ids = probs.topk(4, dim=-1)
    torch.testing.assert_close(signal.token_ids, top_ids)
    torch.testing.assert_close(signal.log_probs, top_probs.log())
    assert_float32_close(signal.tail_log_mass, (1 - top_probs.sum(-1)).log(), VOCAB)


def test_full_k_equals_dense_forward_kl_in_value_and_gradient():
    student = random_logits(seed=1, dtype=torch.float64).requires_grad_()
    teacher = random_logits(seed=2, dtype=torch.float64)
    signal = SparseTeacherSignal.from_logits(teacher, k=VOCAB)

    sparse, dense = sparse_forward_kl(student, signal), forward_kl(student, teacher)

    assert torch.isneginf(signal.tail_log_mass).all()
    torch.testing.assert_close(sparse, dense, rtol=1e-12, atol=1e-14)
    (sparse_grad,) = torch.autograd.grad(sparse.sum(), student)
    (dense_grad,) = torch.autograd.grad(dense.sum(), student)
    torch.testing.assert_close(sparse_grad, dense_grad, rtol=1e-12, atol=1e-14)


def test_smaller_k_lumps_more_tokens_so_never_exceeds_the_dense_kl():
    """Merging outcomes into one bucket can only lower a KL; the top-k buckets are nested in k."""
    student, teacher = random_logits(seed=1, dtype=torch.float64), random_logits(seed=2, dtype=torch.float64)
    by_k = torch.stack([sparse_forward_kl(student, SparseTeacherSignal.from_logits(teacher, k)) for k in (1, 3, 10)])
    dense = forward_kl(student, teacher)

    assert (by_k >= 0).all()
    assert (by_k[:-1] <= by_k[1:]).all()
    assert (by_k[-1] <= dense).all() and (by_k[-1] < dense).any()


def test_teacher_without_tail_mass_gives_finite_loss_and_gradients():
    teacher = torch.full((2, 5), float("-inf"))
    teacher[:, 0] = 0.0  # all the mass on one token: zero probabilities in the top-k and in the tail
    signal = SparseTeacherSignal.from_logits(teacher, k=2)
    student = random_logits(seed=3, rows=2, vocab=5).requires_grad_()

    loss = sparse_forward_kl(student, signal)
    loss.sum().backward()

    assert torch.isneginf(signal.tail_log_mass).all()
    torch.testing.assert_close(loss, -student.log_softmax(-1)[:, 0].detach())
    assert torch.isfinite(student.grad).all()


def test_small_k_approximates_a_peaked_teacher_closely():
    teacher = random_logits(seed=4, vocab=500, scale=4.0)
    student = teacher + random_logits(seed=5, vocab=500, scale=0.5)
    dense = forward_kl(student, teacher).sum()
    sparse = sparse_forward_kl(student, SparseTeacherSignal.from_logits(teacher, k=64)).sum()
    assert math.isclose(sparse, dense, rel_tol=0.1)


@pytest.mark.parametrize("k", [5, VOCAB])
def test_chunked_from_hidden_states_equals_the_plain_loss(k):
    generator = torch.Generator().manual_seed(6)
    hidden = torch.randn(TOKENS, 8, generator=generator).requires_grad_()
    weight = torch.randn(VOCAB + 4, 8, generator=generator).requires_grad_()
    labels = torch.randint(VOCAB, (TOKENS,), generator=generator)
    labels[0] = IGNORE_INDEX
    signal = SparseTeacherSignal.from_logits(random_logits(seed=7), k)

    fused = sparse_head_kd_loss(hidden, weight, signal, VOCAB, chunk_size=4, labels=labels, ce_weight=0.5)
    logits = (hidden @ weight.T)[:, :VOCAB]
    plain_kd = sparse_forward_kl(logits, signal).sum()
    plain = plain_kd + 0.5 * torch.nn.functional.cross_entropy(logits, labels, reduction="sum")

    loss = (8, VOCAB, TOKENS)  # the logits over the width 8, the divergence over the vocabulary, the positions
    assert_float32_close(fused.kd_sum, plain_kd, *loss)
    assert_float32_close(fused.loss, plain, *loss)
    fused_grads = torch.autograd.grad(fused.loss, (hidden, weight))
    plain_grads = torch.autograd.grad(plain, (hidden, weight))
    for fused_grad, plain_grad in zip(fused_grads, plain_grads, strict=True):
        assert_float32_close(fused_grad, plain_grad, *loss, VOCAB)  # and the backward sum over the vocabulary


def test_signal_for_other_positions_is_refused():
    signal = SparseTeacherSignal.from_logits(random_logits(seed=0), k=3)
    with pytest.raises(ValueError, match="9 positions, the Student 8"):
        sparse_head_kd_loss(torch.randn(8, 4), torch.randn(VOCAB, 4), signal, VOCAB)
