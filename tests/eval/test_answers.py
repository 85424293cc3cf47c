from pathlib import Path

import pytest

from llava_ckd.eval.answers import answer_record, answer_texts, read_answers, write_answers
from llava_ckd.eval.questions import EvalQuestion
from llava_ckd.files import DataError, read_json, read_jsonl


def _question(question_id, prompt="What?"):
    return EvalQuestion(question_id=question_id, image=None, prompt=prompt)


def test_written_answers_read_back(tmp_path: Path):
    questions = [_question(1), _question("q2")]
    path = tmp_path / "sub" / "answers.jsonl"
    write_answers(path, [answer_record(q, f"answer {q.question_id}", "tiny") for q in questions])
    answers = read_answers(path)
    assert [a["question_id"] for a in answers] == [1, "q2"]
    assert set(answers[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert answers[0]["answer_id"] != answers[1]["answer_id"]
    assert answer_texts(questions, answers) == ["answer 1", "answer q2"]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"question_id": 3}', "lacks text"),
        ('{"question_id": 3, "text": 5}', "not a string"),
    ],
)
def test_bad_answer_lines_name_file_and_line(tmp_path: Path, bad_line, message):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 1, "text": "a"}\n\n' + bad_line + "\n")
    with pytest.raises(DataError, match=rf"answers\.jsonl:3:(\d+:)? .*{message}"):
        read_answers(path)


def test_missing_answer_file_is_named(tmp_path: Path):
    with pytest.raises(DataError, match="missing answer file: .*nowhere.jsonl"):
        read_answers(tmp_path / "nowhere.jsonl")


def test_ids_match_across_int_and_str():
    assert answer_texts([_question(7)], [{"question_id": "7", "text": "x"}]) == ["x"]


def test_missing_unknown_and_repeated_answers_raise():
    questions = [_question(1), _question(2)]
    with pytest.raises(DataError, match="1 of 2 questions have no answer"):
        answer_texts(questions, [{"question_id": 1, "text": "a"}])
    with pytest.raises(DataError, match="1 answers match no question"):
        answer_texts(questions, [{"question_id": i, "text": "a"} for i in (1, 2, 3)])
    with pytest.raises(DataError, match="answered twice"):
        answer_texts(questions, [{"question_id": i, "text": "a"} for i in (1, 1, 2)])


def test_shared_ids_are_told_apart_by_prompt():
    questions = [_question("img.png", "Is it red?"), _question("img.png", "Is it blue?")]
    answers = [
        {"question_id": "img.png", "prompt": "Is it blue?", "text": "no"},
        {"question_id": "img.png", "prompt": "Is it red?", "text": "yes"},
    ]
    assert answer_texts(questions, answers) == ["yes", "no"]
    with pytest.raises(DataError, match="need a `prompt`"):
        answer_texts(questions, [{"question_id": "img.png", "text": "yes"}])


def test_invalid_utf8_byte_names_file_and_line(tmp_path: Path):
    path = tmp_path / "answers.jsonl"
    path.write_bytes(b'{"question_id": 1, "text": "a"}\n\n{"question_id": 2, "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"answers\.jsonl:3:\d+: not UTF-8 text \(byte \d+ is"):
        read_answers(path)


def test_jsonl_and_json_readers_name_file_and_line_of_an_invalid_byte(tmp_path: Path):
    jsonl = tmp_path / "questions.jsonl"
    jsonl.write_bytes(b'{"question_id": 1}\n{"question_id": 2, "text": "\xff"}\n')
    with pytest.raises(DataError, match=r"questions\.jsonl:2:\d+: not UTF-8 text \(byte \d+ is"):
        read_jsonl(jsonl, "question file")
    whole = tmp_path / "annotations.json"
    whole.write_bytes(b'{"data": [\n  {"answers": ["ok"]},\n  {"answers": ["\xc3("]}\n]}\n')
    with pytest.raises(DataError, match=r"annotations\.json:3:\d+: not UTF-8 text \(byte \d+ is"):
        read_json(whole, "annotations")
