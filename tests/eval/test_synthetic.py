from pathlib import Path

import pytest

from llava_ckd.data.synthetic import SyntheticSpec, write_benchmark
from llava_ckd.eval.answers import answer_record, write_answers
from llava_ckd.eval.synthetic import SYNTHETIC
from llava_ckd.files import DataError, read_jsonl


@pytest.fixture
def synthetic_dir(tmp_path: Path) -> Path:
    write_answers(tmp_path / "questions.jsonl", [
        {"question_id": "q1", "image": "1.png", "text": "What colour is the circle?", "category": "colour"},
        {"question_id": "q2", "image": "1.png", "text": "How many shapes?", "category": "count"},
        {"question_id": "q3", "image": "2.png", "text": "What shape is red?", "category": "shape"},
    ])
    write_answers(tmp_path / "answer_key.jsonl", [
        {"question_id": "q1", "answer": "red", "category": "colour"},
        {"question_id": "q2", "answer": "3", "category": "count"},
        {"question_id": "q3", "answer": "circle", "category": "shape"},
    ])
    return tmp_path


def test_questions_resolve_images(synthetic_dir: Path):
    questions = SYNTHETIC.questions(synthetic_dir)
    assert [q.prompt for q in questions][0] == "What colour is the circle?"
    assert questions[2].image == (synthetic_dir / "images" / "2.png").resolve()


def test_score_strips_one_period_and_lowercases(synthetic_dir: Path):
    answers = [
        {"question_id": "q1", "text": " Red. "},
        {"question_id": "q2", "text": "three"},
        {"question_id": "q3", "text": "Circle"},
    ]
    result = SYNTHETIC.score(synthetic_dir, answers)
    assert result == {
        "accuracy": pytest.approx(200 / 3),
        "categories": {"colour": 100.0, "count": 0.0, "shape": 100.0},
        "n": 3,
    }
    assert "66.67" in SYNTHETIC.render(result)


def test_missing_answer_is_an_error(synthetic_dir: Path):
    with pytest.raises(DataError, match="1 of 3 questions have no answer"):
        SYNTHETIC.score(synthetic_dir, [{"question_id": q, "text": "x"} for q in ("q1", "q2")])


def test_scores_what_make_data_writes(tmp_path: Path):
    write_benchmark(tmp_path, SyntheticSpec(seed=0, n_train=2, n_val=2, n_test=10, n_captions=1))
    test_dir = tmp_path / "test"
    questions = SYNTHETIC.questions(test_dir)
    assert all(q.image.is_file() for q in questions)
    key = {k["question_id"]: k["answer"] for k in read_jsonl(test_dir / "answer_key.jsonl", "answer key")}
    answers = [answer_record(q, key[q.question_id].capitalize() + ".", "oracle") for q in questions]
    assert SYNTHETIC.score(test_dir, answers)["accuracy"] == 100.0
