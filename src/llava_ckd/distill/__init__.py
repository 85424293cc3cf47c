"""Distillation math: divergences, vocabulary alignment, chunked LM-head losses, RDist, cached signals."""

from llava_ckd.distill.divergences import DIVERGENCES, DivergenceSpec
from llava_ckd.distill.heads import HeadLosses, fused_head_loss, head_kd_loss
from llava_ckd.distill.relation import head_gram, rdist_loss
from llava_ckd.distill.sparse import SparseTeacherSignal, sparse_forward_kl, sparse_head_kd_loss
from llava_ckd.distill.vocab import shared_vocab_size, shared_vocabulary

__all__ = [
    "DIVERGENCES",
    "DivergenceSpec",
    "HeadLosses",
    "SparseTeacherSignal",
    "shared_vocabulary",
    "fused_head_loss",
    "head_gram",
    "head_kd_loss",
    "rdist_loss",
    "shared_vocab_size",
    "sparse_forward_kl",
    "sparse_head_kd_loss",
]
