"""GQA, TextVQA, VizWiz, VQAv2: loaders and converters on the real files, scorers on hand-made ground truth."""

import json
from pathlib import Path

import pytest

from llava_ckd.data.conversations import SHORT_ANSWER_SUFFIX
from llava_ckd.eval.answers import read_answers, write_answers
from llava_ckd.eval.gqa import GQA
from llava_ckd.eval.textvqa import TEXTVQA, question_from_prompt
from llava_ckd.eval.vizwiz import VIZWIZ
from llava_ckd.eval.vqav2 import VQAV2
from llava_ckd.files import DataError

from .conftest import line_count


@pytest.mark.parametrize("benchmark", [GQA, TEXTVQA, VIZWIZ], ids=lambda b: b.name)
def test_loaders_read_every_line(llava_benchmarks, benchmark):
    data_dir = llava_benchmarks / benchmark.name
    questions = benchmark.questions(data_dir)
    assert len(questions) == line_count(data_dir / "questions.jsonl")
    assert len(read_answers(data_dir / "answers.jsonl")) == line_count(data_dir / "answers.jsonl")
    assert all(q.prompt.endswith(SHORT_ANSWER_SUFFIX) for q in questions)
    assert questions[0].image == (data_dir / "images" / questions[0].image.name).resolve()


def test_gqa_predictions_cover_every_question(llava_benchmarks):
    gqa = llava_benchmarks / "gqa"
    predictions = GQA.predictions(gqa, read_answers(gqa / "answers.jsonl"))
    assert len(predictions) == line_count(gqa / "questions.jsonl") == 12578
    assert predictions[:2] == [{"questionId": "201307251", "prediction": "no"},
                               {"questionId": "201640614", "prediction": "woman"}]  # fmt: skip


def test_vizwiz_submission_covers_every_question(llava_benchmarks):
    vizwiz = llava_benchmarks / "vizwiz"
    entries = VIZWIZ.submission(vizwiz, read_answers(vizwiz / "answers.jsonl"))
    assert len(entries) == 8000
    assert len({e["image"] for e in entries}) == 8000
    assert entries[:2] == [{"image": "VizWiz_test_00000000.jpg", "answer": "black"},
                           {"image": "VizWiz_test_00000001.jpg", "answer": "unanswerable"}]  # fmt: skip


def test_textvqa_finds_the_question_line(llava_benchmarks):
    questions = TEXTVQA.questions(llava_benchmarks / "textvqa")
    assert question_from_prompt(questions[0].prompt) == "what is the brand of this camera?"
    assert question_from_prompt("Reference OCR token: A\nWhat is it?\n" + SHORT_ANSWER_SUFFIX.strip()) == "what is it?"
    with pytest.raises(DataError, match="not a LLaVA TextVQA prompt"):
        question_from_prompt("What is it?")


@pytest.mark.parametrize(
    ("benchmark", "ground_truth"),
    [(GQA, "testdev_balanced_questions.json"), (TEXTVQA, "TextVQA_0.5.1_val.json"), (VIZWIZ, "val.json")],
    ids=lambda v: getattr(v, "name", v),
)
def test_scorers_name_the_missing_ground_truth(llava_benchmarks, benchmark, ground_truth):
    data_dir = llava_benchmarks / benchmark.name
    with pytest.raises(DataError, match=ground_truth):
        benchmark.score(data_dir, read_answers(data_dir / "answers.jsonl"))


def _llava_questions(data_dir: Path, rows: list[tuple]) -> None:
    write_answers(data_dir / "questions.jsonl", [
        {"question_id": qid, "image": image, "text": text + SHORT_ANSWER_SUFFIX, "category": "default"}
        for qid, image, text in rows
    ])  # fmt: skip


def _answers(pairs: list[tuple]) -> list[dict]:
    return [{"question_id": qid, "prompt": prompt + SHORT_ANSWER_SUFFIX, "text": text} for qid, prompt, text in pairs]


def test_gqa_score_by_hand(tmp_path: Path):
    _llava_questions(tmp_path, [("1", "a.jpg", "Is it?"), ("2", "a.jpg", "Who?"), ("3", "b.jpg", "Which?")])
    truth = {
        "1": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify", "semantic": "rel"}},
        "2": {"answer": "woman", "isBalanced": True, "types": {"structural": "query", "semantic": "obj"}},
        "3": {"answer": "left", "isBalanced": True, "types": {"structural": "choose", "semantic": "rel"}},
        "4": {"answer": "no", "isBalanced": False, "types": {"structural": "verify", "semantic": "obj"}},
    }
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(truth))
    answers = _answers([("1", "Is it?", "Yes."), ("2", "Who?", "Woman"), ("3", "Which?", "Right")])
    result = GQA.score(tmp_path, answers)
    assert result["accuracy"] == pytest.approx(200 / 3)
    assert result["n"] == 3
    assert result["structural"] == {"choose": 0.0, "query": 100.0, "verify": 100.0}
    assert result["semantic"] == {"obj": 100.0, "rel": 50.0}
    assert "66.67" in GQA.render(result)


def test_gqa_balanced_question_without_prediction_is_an_error(tmp_path: Path):
    _llava_questions(tmp_path, [("1", "a.jpg", "Is it?")])
    truth = {k: {"answer": "no", "isBalanced": True, "types": {"structural": "s", "semantic": "s"}} for k in "12"}
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(truth))
    with pytest.raises(DataError, match="no prediction for GQA question 2"):
        GQA.score(tmp_path, _answers([("1", "Is it?", "no")]))


def test_textvqa_score_by_hand(tmp_path: Path):
    prompts = ["What brand?\nReference OCR token: DAKOTA, DIGITAL", "What shoe?\nReference OCR token: NIKE"]
    _llava_questions(tmp_path, [("img1", "img1.jpg", prompts[0]), ("img1", "img1.jpg", prompts[1])])
    annotations = [
        {"image_id": "img1", "question": "What Brand?", "answers": ["dakota digital"] * 2 + ["dakota"] * 8},
        {"image_id": "img1", "question": "what shoe?", "answers": ["NIKE"] * 10},
    ]
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": annotations}))
    answers = _answers([("img1", prompts[1], "Nike."), ("img1", prompts[0], "Dakota Digital")])
    result = TEXTVQA.score(tmp_path, answers)
    assert result == {"accuracy": pytest.approx(80.0), "n": 2}  # (1.0 + 0.6) / 2


def test_vizwiz_val_score_by_hand(tmp_path: Path):
    _llava_questions(tmp_path, [(0, "VizWiz_val_0.jpg", "What?"), (1, "VizWiz_val_1.jpg", "Colour?")])
    annotations = [
        {"image": "VizWiz_val_0.jpg", "answers": [{"answer": "unanswerable"}] * 10, "answer_type": "unanswerable"},
        {"image": "VizWiz_val_1.jpg", "answers": [{"answer": "white"}] * 3 + [{"answer": "black"}] * 7,
         "answer_type": "other"},
    ]  # fmt: skip
    (tmp_path / "val.json").write_text(json.dumps(annotations))
    result = VIZWIZ.score(tmp_path, _answers([(0, "What?", "Unanswerable"), (1, "Colour?", "White.")]))
    assert result["accuracy"] == pytest.approx(95.0)
    assert result["answer_types"] == pytest.approx({"other": 90.0, "unanswerable": 100.0})


@pytest.fixture
def vqav2_dir(tmp_path: Path) -> Path:
    _llava_questions(tmp_path, [(1, "a.jpg", "Is it?"), (2, "a.jpg", "How many?"), (3, "b.jpg", "Colour?")])
    write_answers(tmp_path / "llava_vqav2_mscoco_test2015.jsonl", [{"question_id": i} for i in range(1, 6)])

    def annotation(question_id, answer_type, answers):
        return {"question_id": question_id, "answer_type": answer_type, "question_type": "what",
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                            for i, a in enumerate(answers)]}  # fmt: skip

    annotations = [
        annotation(1, "yes/no", ["yes"] * 10),
        annotation(2, "number", ["2"] + ["two"] * 3 + ["3"] * 6),
        annotation(3, "other", ["red"] + ["blue"] * 9),
    ]
    (tmp_path / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    return tmp_path


VQAV2_ANSWERS = _answers([(1, "Is it?", "Yes"), (2, "How many?", "Two"), (3, "Colour?", "Red")])


def test_vqav2_score_by_hand(vqav2_dir: Path):
    result = VQAV2.score(vqav2_dir, VQAV2_ANSWERS)
    # "Yes" is processed to "yes" as LLaVA submits it; "two" and "2" normalise alike (4 matches); red: 1 match
    assert result["accuracy"] == pytest.approx((1.0 + 1.0 + 0.3) / 3 * 100)
    assert result["answer_types"] == pytest.approx({"number": 100.0, "other": 30.0, "yes/no": 100.0})


def test_vqav2_submission_lists_every_test_question(vqav2_dir: Path):
    entries = VQAV2.submission(vqav2_dir, VQAV2_ANSWERS)
    assert entries == [
        {"question_id": 1, "answer": "yes"},
        {"question_id": 2, "answer": "2"},
        {"question_id": 3, "answer": "red"},
        {"question_id": 4, "answer": ""},
        {"question_id": 5, "answer": ""},
    ]


def test_vqav2_needs_the_test2015_list(tmp_path: Path):
    with pytest.raises(DataError, match="llava_vqav2_mscoco_test2015.jsonl"):
        VQAV2.submission(tmp_path, VQAV2_ANSWERS)


def test_textvqa_annotation_without_answers_is_named(tmp_path: Path):
    """mmf's TextVQA scorer asserts 10 human answers per question, so an empty list is an error, not a skip."""
    prompts = ["What brand?\nReference OCR token: DAKOTA", "What shoe?\nReference OCR token: NIKE"]
    _llava_questions(tmp_path, [("img1", "img1.jpg", prompts[0]), ("img2", "img2.jpg", prompts[1])])
    annotations = [
        {"image_id": "img1", "question": "What Brand?", "answers": ["dakota"] * 10},
        {"image_id": "img2", "question": "what shoe?", "answers": []},
    ]
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": annotations}))
    answers = _answers([("img1", prompts[0], "Dakota"), ("img2", prompts[1], "Nike")])
    named = r"TextVQA annotation of question img2 \('what shoe\?'\) has no human answers"
    with pytest.raises(DataError, match=named):
        TEXTVQA.score(tmp_path, answers)


def test_vizwiz_annotation_without_answers_is_named(tmp_path: Path):
    _llava_questions(tmp_path, [(0, "VizWiz_val_0.jpg", "What?"), (7, "VizWiz_val_7.jpg", "Colour?")])
    annotations = [
        {"image": "VizWiz_val_0.jpg", "answers": [{"answer": "red"}] * 10, "answer_type": "other"},
        {"image": "VizWiz_val_7.jpg", "answers": [], "answer_type": "other"},
    ]
    (tmp_path / "val.json").write_text(json.dumps(annotations))
    named = r"VizWiz annotation of question 7 \(VizWiz_val_7\.jpg\) has no human answers"
    with pytest.raises(DataError, match=named):
        VIZWIZ.score(tmp_path, _answers([(0, "What?", "red"), (7, "Colour?", "white")]))


def test_vqav2_annotation_without_answers_is_named(vqav2_dir: Path):
    path = vqav2_dir / "v2_mscoco_val2014_annotations.json"
    annotations = json.loads(path.read_text())
    annotations["annotations"][1]["answers"] = []
    path.write_text(json.dumps(annotations))
    with pytest.raises(DataError, match=r"VQAv2 annotation of question 2 has no human answers"):
        VQAV2.score(vqav2_dir, VQAV2_ANSWERS)
