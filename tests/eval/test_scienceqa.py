import pytest

from llava_ckd.eval.answers import read_answers
from llava_ckd.eval.questions import MULTIPLE_CHOICE_SUFFIX
from llava_ckd.eval.scienceqa import SCIENCEQA, choice_count, parse_choice


def test_golden_numbers(llava_benchmarks):
    scienceqa = llava_benchmarks / "scienceqa"
    result = SCIENCEQA.score(scienceqa, read_answers(scienceqa / "answers.jsonl"))
    assert (result["img_correct"], result["img_total"]) == (1445, 2017)
    assert round(result["img_accuracy"], 2) == 71.64
    assert round(result["accuracy"], 2) == 74.39
    assert set(result) == {"img_accuracy", "accuracy", "img_correct", "img_total"}


def test_prompts_drop_the_image_placeholder_and_add_the_suffix(llava_benchmarks):
    questions = SCIENCEQA.questions(llava_benchmarks / "scienceqa")
    assert len(questions) == 4241
    assert sum(q.image is not None for q in questions) == 2017
    assert all(q.prompt.endswith(MULTIPLE_CHOICE_SUFFIX) and "<image>" not in q.prompt for q in questions)
    with_image = next(q for q in questions if q.image is not None)
    assert with_image.image.is_absolute() and with_image.prompt.startswith("Context:")


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ("B", "B"),
        ("A.", None),
        ("A. chiasmus", "A"),
        ("The answer is B.", "B"),
        ("The answer is B. The answer is C.", None),  # must match exactly once
        ("b", None),
        ("F", None),
        ("The answer is F.", "F"),  # parsed, then wrong as it is beyond the options
    ],
)
def test_choice_parser(text, choice):
    assert parse_choice(text) == choice


def test_choice_count_handles_multi_line_options():
    assert choice_count("Which closing is correct?\nA. See you soon,\nJanet\nB. See You Soon,\nJanet") == 2
    assert choice_count("Context: x\nA. is a list\nQuestion?\nA. one\nB. two\nC. three") == 3
