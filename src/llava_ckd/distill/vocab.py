"""Vocabulary alignment between Teacher and Student.

KD compares distributions over the tokenizer's vocabulary. LM heads are often padded beyond it
(Qwen2.5: 151,936 rows for 0.5B-3B, 152,064 for 7B, 151,665 real tokens); the padded rows never
stand for a token, so both models' logits are sliced to the tokenizer's size before any softmax.
"""

from __future__ import annotations

from typing import Protocol


class Tokenizer(Protocol):
    name_or_path: str

    def get_vocab(self) -> dict[str, int]: ...


def shared_vocab_size(student_vocab_rows: int, teacher_vocab_rows: int, tokenizer_len: int) -> int:
    """Number of leading logit rows that KD compares: the shared tokenizer's length."""
    if tokenizer_len > min(student_vocab_rows, teacher_vocab_rows):
        raise ValueError(
            f"the tokenizer has {tokenizer_len} tokens but the Student's LM head has {student_vocab_rows} "
            f"rows and the Teacher's {teacher_vocab_rows}: every token needs a row in both"
        )
    return tokenizer_len


def check_same_tokenizer(student_tokenizer: Tokenizer, teacher_tokenizer: Tokenizer) -> None:
    """Refuse a Teacher/Student pair whose tokenizers map tokens to ids differently."""
    student_vocab = student_tokenizer.get_vocab()
    teacher_vocab = teacher_tokenizer.get_vocab()
    if student_vocab == teacher_vocab:
        return
    differing = sorted(set(student_vocab.items()) ^ set(teacher_vocab.items()), key=lambda item: item[1])
    token, token_id = differing[0]
    raise ValueError(
        f"Student tokenizer {student_tokenizer.name_or_path!r} ({len(student_vocab)} tokens) and "
        f"Teacher tokenizer {teacher_tokenizer.name_or_path!r} ({len(teacher_vocab)} tokens) differ "
        f"(first difference at id {token_id}: {token!r}); logit KD needs one shared tokenizer"
    )
