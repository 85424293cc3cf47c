import pytest

from llava_ckd.eval.vqa_normalize import (
    evalai_process,
    normalize_vqa_answer,
    textvqa_accuracy,
    vizwiz_accuracy,
    vqa_soft_score,
    vqav2_accuracy,
)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("dont", "don't"),  # contractions from the fixed table
        ("Two dogs", "2 dogs"),  # number words, lowercase
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),  # only zero..ten
        ("the Red Car", "red car"),  # articles dropped
        ("a an the", ""),
        ("yes.", "yes"),  # period not followed by a digit
        ("3.5", "3.5"),  # period before a digit kept
        ("1,000", "1000"),  # a comma between digits: every mark is deleted
        ("red,blue", "red blue"),  # else a mark not next to a space becomes a space
        ("red, blue", "red blue"),  # and one next to a space is deleted
        ("hot-dog", "hot dog"),
        ("  left\nside\t", "left side"),
        ("it's", "it's"),
    ],
)
def test_official_vqa_normalisation(raw, normalized):
    assert normalize_vqa_answer(raw) == normalized


def test_period_strip_keeps_the_count_quirk():
    # re.sub(..., re.UNICODE) passes 32 as the count: periods after the 32nd survive.
    assert normalize_vqa_answer("a." * 40).count(".") == 8


@pytest.mark.parametrize(
    ("raw", "processed"),
    [
        ("Yes", "yes"),
        ("What?", "what"),  # ? deleted before punctuation handling
        ("1,000", "1000"),
        ("red,blue", "redblue"),  # EvalAI deletes every comma, vqaEval would leave a space
        ("man's hat", "man 's hat"),  # 's split off
        ("Three", "3"),
        ("The dog.", "dog"),
    ],
)
def test_evalai_answer_processor(raw, processed):
    assert evalai_process(raw) == processed


@pytest.mark.parametrize(("matches", "score"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_soft_score_averages_min_one_of_matches_over_three_across_ten(matches, score):
    human_answers = ["cat"] * matches + ["dog"] * (10 - matches)
    assert vqa_soft_score("cat", human_answers) == pytest.approx(score)


def test_vqav2_unanimous_answers_are_not_normalised():
    assert vqav2_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqav2_accuracy("yes", ["yes"] * 10) == 1.0


def test_vqav2_normalises_when_answers_differ():
    assert vqav2_accuracy("Yes", ["yes"] * 9 + ["no"]) == pytest.approx(1.0)
    assert vqav2_accuracy("Two", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)


def test_vizwiz_normalises_the_prediction_only():
    assert vizwiz_accuracy("The Dog.", ["dog"] * 10) == 1.0
    assert vizwiz_accuracy("dog", ["The dog"] * 10) == 0.0


def test_textvqa_processes_both_sides():
    assert textvqa_accuracy("Nike.", ["NIKE"] * 10) == 1.0
    assert textvqa_accuracy("Dakota digital", ["dakota digital"] * 2 + ["dakota"] * 8) == pytest.approx(0.6)
