import random
from pathlib import Path

import pytest

from llava_ckd.eval.answers import write_answers
from llava_ckd.eval.mmmu import MMMU, build_prompt, open_is_correct, parse_choice, parse_open

OPTIONS = {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}


def _never_drawn() -> random.Random:
    class NoRandom(random.Random):
        def choice(self, seq):
            raise AssertionError("fell back to a random letter")

    return NoRandom()


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("(B)", "B"),
        ("B", "B"),
        ("B.", "B"),
        ("The answer is (C), not (A).", "A"),  # several bracketed: the last in the text
        ("A or maybe C", "C"),  # several bare: the last
        ("(D) although D and A", "D"),  # brackets win over bare letters
        ("I am quite sure that it is a dog here", "B"),  # more than 5 words: option text
        ("I believe the picture shows a dog and later a cat", "A"),  # the last option text
    ],
)
def test_choice_parse_order(response, letter):
    assert parse_choice(response, OPTIONS, _never_drawn()) == letter


def test_unparsed_choices_draw_from_seed_42_in_order():
    rng = random.Random(42)
    draws = [parse_choice("no idea", OPTIONS, rng) for _ in range(4)]
    assert draws == ["A", "A", "C", "B"]  # random.Random(42).choice over A-D, four times
    assert parse_choice("a dog", OPTIONS, random.Random(42)) == "A"  # 2 words: no option-text match


def test_open_answers():
    assert open_is_correct("3.5", parse_open("So the result is 3.50."))
    assert open_is_correct("1000", parse_open("The total is 1,000 dollars"))
    assert open_is_correct(["Paris", "paris, france"], parse_open("It is Paris"))
    assert not open_is_correct("4", parse_open("The answer is 5"))
    assert not open_is_correct("a", parse_open("banana"))  # one letter is padded with a space


def test_prompts():
    question = {"question": "Which animal? <image 1>", "options": "['cat', 'dog']", "question_type": "multiple-choice"}
    assert build_prompt(question) == (
        "Which animal? <image 1>\n(A) cat\n(B) dog\n\nAnswer with the option's letter from the given choices directly."
    )
    assert build_prompt({"question": "How many?", "question_type": "open"}) == (
        "How many?\nAnswer the question using a single word or phrase."
    )


def test_score_by_hand(tmp_path: Path):
    records = [
        {"id": "validation_Art_1", "question": "Q1", "options": ["x", "y"], "answer": "B",
         "question_type": "multiple-choice", "image": "a.png"},
        {"id": "validation_Art_Theory_1", "question": "Q2", "options": ["x", "y", "z", "w"], "answer": "A",
         "question_type": "multiple-choice", "image": None},
        {"id": "validation_Math_1", "question": "Q3", "options": [], "answer": "12", "question_type": "open",
         "image": "b.png"},
    ]
    write_answers(tmp_path / "questions.jsonl", records)
    questions = MMMU.questions(tmp_path)
    assert [q.category for q in questions] == ["Art", "Art_Theory", "Math"]
    assert questions[1].image is None and questions[0].image == (tmp_path / "images" / "a.png").resolve()
    answers = [
        {"question_id": "validation_Art_1", "text": "(B)"},
        {"question_id": "validation_Art_Theory_1", "text": "?"},  # random: Random(42) draws A first
        {"question_id": "validation_Math_1", "text": "12 apples"},
    ]
    result = MMMU.score(tmp_path, answers)
    assert result == {"accuracy": 100.0, "n": 3, "categories": {"Art": 100.0, "Art_Theory": 100.0, "Math": 100.0}}
