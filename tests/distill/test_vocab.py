import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from llava_ckd.distill.vocab import check_same_tokenizer, shared_vocab_size


def tokenizer(name, vocab):
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")), name_or_path=name)


def test_shared_vocab_is_the_tokenizer_length_for_qwen25_padded_heads():
    assert shared_vocab_size(151_936, 152_064, 151_665) == 151_665


def test_shared_vocab_refuses_a_head_smaller_than_the_tokenizer():
    with pytest.raises(ValueError, match="151936 rows and the Teacher's 100"):
        shared_vocab_size(151_936, 100, 151_665)


def test_same_tokenizer_passes():
    vocab = {"<unk>": 0, "cat": 1, "dog": 2}
    check_same_tokenizer(tokenizer("student-tok", vocab), tokenizer("teacher-tok", dict(vocab)))


@pytest.mark.parametrize(
    "teacher_vocab",
    [
        {"<unk>": 0, "cat": 1, "cow": 2},
        {"<unk>": 0, "cat": 2, "dog": 1},
        {"<unk>": 0, "cat": 1, "dog": 2, "x": 3},
    ],
    ids=["other-token", "other-ids", "extra-token"],
)
def test_different_tokenizers_are_refused_naming_both(teacher_vocab):
    student = tokenizer("org/student-tok", {"<unk>": 0, "cat": 1, "dog": 2})
    with pytest.raises(ValueError, match="'org/student-tok'.*'org/teacher-tok'"):
        check_same_tokenizer(student, tokenizer("org/teacher-tok", teacher_vocab))
