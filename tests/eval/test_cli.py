import json
from pathlib import Path

import pytest

from llava_ckd.cli import main


def test_score_pope_end_to_end(llava_benchmarks, tmp_path: Path, capsys):
    pope = llava_benchmarks / "pope"
    out = tmp_path / "pope.json"
    main(["score", "pope", "--data", str(pope), "--answers", str(pope / "answers.jsonl"), "--json", str(out)])
    assert "mean F1: 85.95" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result) == {"f1_mean", "splits"}
    assert set(result["splits"]) == {"adversarial", "popular", "random"}
    assert set(result["splits"]["random"]) == {"f1", "accuracy", "precision", "recall", "yes_ratio", "n"}
    assert round(result["f1_mean"], 2) == 85.95


def test_score_unknown_benchmark_exits_with_the_known_names(llava_benchmarks):
    pope = llava_benchmarks / "pope"
    with pytest.raises(SystemExit, match="unknown benchmark 'pop'; known: .*pope"):
        main(["score", "pop", "--data", str(pope), "--answers", str(pope / "answers.jsonl")])


def test_score_with_answers_of_another_benchmark_explains(llava_benchmarks):
    with pytest.raises(SystemExit, match="2374 of 2374 questions have no answer"):
        main(["score", "mme", "--data", str(llava_benchmarks / "mme"),
              "--answers", str(llava_benchmarks / "pope" / "answers.jsonl")])


def test_convert_vizwiz(llava_benchmarks, tmp_path: Path, capsys):
    vizwiz = llava_benchmarks / "vizwiz"
    out = tmp_path / "upload" / "vizwiz.json"
    main(["convert", "vizwiz", "--data", str(vizwiz), "--answers", str(vizwiz / "answers.jsonl"), "--out", str(out)])
    assert "8000 answers" in capsys.readouterr().out
    assert len(json.loads(out.read_text())) == 8000


def test_convert_refuses_locally_scored_sets(llava_benchmarks, tmp_path: Path):
    pope = llava_benchmarks / "pope"
    with pytest.raises(SystemExit, match="no converter for 'pope'"):
        main(["convert", "pope", "--data", str(pope), "--answers", str(pope / "answers.jsonl"),
              "--out", str(tmp_path / "x.json")])


@pytest.fixture
def synthetic_data(tmp_path: Path) -> Path:
    """Two synthetic questions with their answer key (scoring reads no images)."""
    data = tmp_path / "data"
    data.mkdir()
    questions = [{"question_id": i, "image": f"{i}.png", "text": "What colour?", "category": "colour"} for i in (0, 1)]
    (data / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    key = [{"question_id": i, "answer": "red", "category": "colour"} for i in (0, 1)]
    (data / "answer_key.jsonl").write_text("".join(json.dumps(k) + "\n" for k in key))
    return data


def _exit_message(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = exit_info.value.code
    assert isinstance(message, str), "exits with a message (status 1), not a traceback or status 0"
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_score_answers_with_an_invalid_byte_prints_one_error_line_with_file_and_line(synthetic_data, tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(b'{"question_id": 0, "text": "red"}\n{"question_id": 1, "text": "r\xe9d"}\n')
    message = _exit_message(["score", "synthetic", "--data", str(synthetic_data), "--answers", str(answers)])
    assert f"{answers}:2:30: not UTF-8 text (byte 63 is 0xe9" in message


def test_failed_score_leaves_no_stale_json(synthetic_data, tmp_path, capsys):
    answers, out = tmp_path / "answers.jsonl", tmp_path / "result.json"
    answers.write_text("".join(json.dumps({"question_id": i, "text": "red"}) + "\n" for i in (0, 1)))
    main(["score", "synthetic", "--data", str(synthetic_data), "--answers", str(answers), "--json", str(out)])
    assert json.loads(out.read_text())["accuracy"] == 100.0
    answers.write_text(json.dumps({"question_id": 0, "text": "red"}) + "\n")  # question 1 unanswered now
    message = _exit_message(["score", "synthetic", "--data", str(synthetic_data), "--answers", str(answers),
                             "--json", str(out)])
    assert "1 of 2 questions have no answer" in message
    assert not out.exists()


def test_eval_refuses_a_batch_size_below_one(synthetic_data, tmp_path):
    message = _exit_message(["eval", "--model", str(tmp_path / "model"), "--benchmark", "synthetic",
                             "--data", str(synthetic_data), "--out", str(tmp_path / "eval"), "--batch-size", "0"])
    assert message == "error: --batch-size must be at least 1, got 0"
    assert not (tmp_path / "eval").exists()
