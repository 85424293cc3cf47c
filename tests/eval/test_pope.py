import pytest

from llava_ckd.eval.answers import read_answers
from llava_ckd.eval.pope import POPE, parse_yes, split_metrics

README_TABLE = {  # split: (F1, accuracy, precision, recall, yes-ratio), 3 decimals
    "adversarial": (0.845, 0.855, 0.910, 0.788, 0.433),
    "popular": (0.862, 0.874, 0.952, 0.788, 0.414),
    "random": (0.871, 0.880, 0.974, 0.788, 0.417),
}


@pytest.fixture(scope="module")
def golden(llava_benchmarks):
    pope = llava_benchmarks / "pope"
    return POPE.score(pope, read_answers(pope / "answers.jsonl"))


def test_f1_per_split_and_mean(golden):
    splits = golden["splits"]
    assert round(splits["adversarial"]["f1"], 4) == 0.8446
    assert round(splits["popular"]["f1"], 4) == 0.8625
    assert round(splits["random"]["f1"], 4) == 0.8714
    assert round(golden["f1_mean"], 2) == 85.95


def test_split_metrics_match_readme_table(golden):
    for split, expected in README_TABLE.items():
        metrics = golden["splits"][split]
        got = tuple(round(metrics[k], 3) for k in ("f1", "accuracy", "precision", "recall", "yes_ratio"))
        assert got == expected, split
    assert {s: m["n"] for s, m in golden["splits"].items()} == {"adversarial": 3000, "popular": 3000, "random": 2910}


def test_render_shows_three_decimals(golden):
    text = POPE.render(golden)
    assert "mean F1: 85.95" in text
    assert all(f1 in text for f1 in ("0.845", "0.862", "0.871"))


@pytest.mark.parametrize(
    ("text", "is_yes"),
    [
        ("Yes", True),
        ("No", False),
        ("no", False),
        ("NO", True),  # only No, no and not count
        ("not sure", False),
        ("", True),
        ("Yes. There is no dog.", True),  # only the first sentence
        ("No, there is not.", False),
        ("Nope", True),
        ("There is,no dog", True),  # commas are deleted, not split on: "isno"
    ],
)
def test_yes_no_parser(text, is_yes):
    assert parse_yes(text) is is_yes


def test_split_metrics_by_hand():
    predicted = [True, True, False, False, True]
    labelled = [True, False, True, False, True]
    metrics = split_metrics(predicted, labelled)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["yes_ratio"] == pytest.approx(3 / 5)
