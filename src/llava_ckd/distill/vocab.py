"""Vocabulary alignment between Teacher and Student.

KD compares distributions over the tokenizer's vocabulary. LM heads are often padded beyond it
(Qwen2.5: 151,936 rows for 0.5B-3B, 152,064 for 7B, 151,665 real tokens); the padded rows never
stand for a token, so both models' logits are sliced to the tokenizer's size before any softmax.
A Teacher and a Student with one base vocabulary but different added special tokens compare the ids they share.
"""

from __future__ import annotations

import logging
from typing import Protocol

from llava_ckd.errors import UserError

log = logging.getLogger(__name__)


class VocabularyMismatch(UserError, ValueError):
    """Student and Teacher do not share the token ids logit KD compares."""


class Tokenizer(Protocol):
    name_or_path: str

    def get_vocab(self) -> dict[str, int]: ...

    def get_added_vocab(self) -> dict[str, int]: ...


def shared_vocab_size(student_vocab_rows: int, teacher_vocab_rows: int, tokenizer_len: int) -> int:
    """Number of leading logit rows that KD compares: the shared tokenizer's length (or shared vocabulary's)."""
    if tokenizer_len > min(student_vocab_rows, teacher_vocab_rows):
        raise VocabularyMismatch(
            f"the tokenizer has {tokenizer_len} tokens but the Student's LM head has {student_vocab_rows} "
            f"rows and the Teacher's {teacher_vocab_rows}: every token needs a row in both"
        )
    return tokenizer_len


def shared_vocabulary(student_tokenizer: Tokenizer, teacher_tokenizer: Tokenizer) -> int:
    """How many leading token ids mean the same token to both tokenizers: the rows logit KD compares.

    Identical tokenizers share all their tokens. One base vocabulary with different added special tokens
    (Qwen2.5-VL's vision tokens, a TinyLLaVA Student's `<image>`) shares the ids up to the first added token
    that differs; every id beyond is an added token of one model only, which the other cannot predict.
    Anything else (a different base vocabulary, or a base token moved) is refused, naming both tokenizers.
    """
    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student_vocab == teacher_vocab:
        return len(student_vocab)
    student_tokens = {token_id: token for token, token_id in student_vocab.items()}
    teacher_tokens = {token_id: token for token, token_id in teacher_vocab.items()}
    shared = 0
    while shared in student_tokens and student_tokens.get(shared) == teacher_tokens.get(shared):
        shared += 1
    added = set(student_tokenizer.get_added_vocab()) | set(teacher_tokenizer.get_added_vocab())
    beyond = [(token_id, tokens[token_id]) for tokens in (student_tokens, teacher_tokens)
              for token_id in sorted(tokens) if token_id >= shared]
    not_added = [(token_id, token) for token_id, token in beyond if token not in added]
    if not_added:
        token_id = min(token_id for token_id, _ in not_added)
        raise VocabularyMismatch(
            f"Student tokenizer {student_tokenizer.name_or_path!r} ({len(student_vocab)} tokens) and "
            f"Teacher tokenizer {teacher_tokenizer.name_or_path!r} ({len(teacher_vocab)} tokens) differ "
            f"(first difference at id {token_id}: Student {student_tokens.get(token_id)!r}, Teacher "
            f"{teacher_tokens.get(token_id)!r}); logit KD needs one base vocabulary"
        )
    log.info("Teacher and Student share one base vocabulary: KD compares token ids 0..%d; added tokens of the "
             "Student only: %s; of the Teacher only: %s", shared - 1,
             sorted(token for token_id, token in student_tokens.items() if token_id >= shared),
             sorted(token for token_id, token in teacher_tokens.items() if token_id >= shared))
    return shared
