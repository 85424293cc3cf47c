import pytest

from llava_ckd.eval.answers import read_answers
from llava_ckd.eval.mme import MME, parse_yes_no, subtask_score

README_SUBTASKS = {
    "existence": 185.0, "count": 155.0, "position": 133.33, "color": 170.0, "posters": 160.54,
    "celebrity": 152.94, "scene": 161.25, "landmark": 170.5, "artwork": 117.75, "OCR": 125.0,
    "commonsense_reasoning": 127.86, "numerical_calculation": 42.5, "text_translation": 77.5,
    "code_reasoning": 47.5,
}  # fmt: skip


@pytest.fixture(scope="module")
def golden(llava_benchmarks):
    mme = llava_benchmarks / "mme"
    return MME.score(mme, read_answers(mme / "answers.jsonl"))


def test_perception_and_cognition(golden):
    assert round(golden["perception"], 2) == 1531.32
    assert round(golden["cognition"], 2) == 295.36


def test_every_subtask(golden):
    assert {task: round(score, 2) for task, score in golden["subtasks"].items()} == README_SUBTASKS


def test_render_lists_subtasks(golden):
    text = MME.render(golden)
    assert "perception: 1531.32" in text
    assert "numerical_calculation" in text


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Yes", "yes"),
        ("no", "no"),
        ("Y", "other"),
        ("Nope", "no"),
        ("Yes, there is.", "yes"),
        ("I think no", "other"),  # only the first 4 characters decide
        ("Not at all", "no"),
    ],
)
def test_answer_parser(text, label):
    assert parse_yes_no(text) == label


def test_subtask_score_adds_accuracy_plus():
    # 3 of 4 answers right (75) and 1 of 2 images with both right (50)
    assert subtask_score([[True, True], [True, False]]) == pytest.approx(125.0)
