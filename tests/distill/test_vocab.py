import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from llava_ckd.distill.vocab import shared_vocab_size, shared_vocabulary


def tokenizer(name, vocab):
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")), name_or_path=name)


def test_shared_vocab_is_the_tokenizer_length_for_qwen25_padded_heads():
    assert shared_vocab_size(151_936, 152_064, 151_665) == 151_665


def test_shared_vocab_refuses_a_head_smaller_than_the_tokenizer():
    with pytest.raises(ValueError, match="151936 rows and the Teacher's 100"):
        shared_vocab_size(151_936, 100, 151_665)


def test_same_tokenizer_shares_every_token():
    vocab = {"<unk>": 0, "cat": 1, "dog": 2}
    assert shared_vocabulary(tokenizer("student-tok", vocab), tokenizer("teacher-tok", dict(vocab))) == 3


def with_added(name, vocab, added):
    extended = tokenizer(name, vocab)
    extended.add_special_tokens({"additional_special_tokens": added})
    return extended


def test_one_base_vocabulary_with_different_added_special_tokens_shares_the_base_rows(caplog):
    base = {"<unk>": 0, "cat": 1, "dog": 2}
    qwen_vl_like = with_added("org/teacher-tok", base, ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"])
    tinyllava_like = with_added("org/student-tok", base, ["<image>"])

    with caplog.at_level("INFO", logger="llava_ckd.distill.vocab"):
        shared = shared_vocabulary(tinyllava_like, qwen_vl_like)

    assert shared == 3
    assert "KD compares token ids 0..2; added tokens of the Student only: ['<image>']; of the Teacher only: " \
           "['<|image_pad|>', '<|vision_end|>', '<|vision_start|>']" in caplog.text


def test_added_tokens_both_have_at_the_same_ids_are_shared():
    base = {"<unk>": 0, "cat": 1, "dog": 2}
    teacher = with_added("teacher", base, ["<|im_end|>", "<|image_pad|>"])
    student = with_added("student", base, ["<|im_end|>", "<image>"])

    assert shared_vocabulary(student, teacher) == 4


def test_a_base_token_beyond_the_shared_ids_is_a_different_tokenizer():
    student = with_added("org/student-tok", {"<unk>": 0, "cat": 1, "dog": 2}, ["<image>"])
    teacher = tokenizer("org/teacher-tok", {"<unk>": 0, "cat": 1, "dog": 2, "cow": 3})

    with pytest.raises(ValueError, match="first difference at id 3: Student '<image>', Teacher 'cow'"):
        shared_vocabulary(student, teacher)


@pytest.mark.parametrize(
    "teacher_vocab",
    [
        {"<unk>": 0, "cat": 1, "cow": 2},
        {"<unk>": 0, "cat": 2, "dog": 1},
        {"<unk>": 0, "cat": 1, "dog": 2, "x": 3},
    ],
    ids=["other-token", "other-ids", "extra-base-token"],
)
def test_different_tokenizers_are_refused_naming_both(teacher_vocab):
    student = tokenizer("org/student-tok", {"<unk>": 0, "cat": 1, "dog": 2})
    with pytest.raises(ValueError, match="'org/student-tok'.*'org/teacher-tok'"):
        shared_vocabulary(student, tokenizer("org/teacher-tok", teacher_vocab))
