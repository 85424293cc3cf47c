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
