import base64
import csv
import io
from pathlib import Path

import pytest
from PIL import Image

from llava_ckd.eval.mmbench import MMBENCH, MMBENCH_CN, extract_letter
from llava_ckd.files import DataError

HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source", "l2-category",
          "comment", "split"]


def _png_base64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _row(index, question, hint, options, answer, category, image):
    cells = {letter: options[i] if i < len(options) else "" for i, letter in enumerate("ABCD")}
    return {"index": index, "question": question, "hint": hint, **cells, "answer": answer, "category": category,
            "image": image, "source": "src", "l2-category": "l2", "comment": "nan", "split": "dev"}


@pytest.fixture
def mmbench_dir(tmp_path: Path) -> Path:
    image = _png_base64()
    rows = [
        _row(0, "What colour?", "nan", ["red", "blue", "green"], "A", "colour", image),
        _row(1, "Which shape?", "Look closely.", ["circle", "None"], "A", "shape", image),
        _row(1000000, "What colour?", "nan", ["blue", "green", "red"], "C", "colour", "0"),
        _row(2000000, "What colour?", "nan", ["green", "red", "blue"], "B", "colour", "0"),
        _row(1000001, "Which shape?", "Look closely.", ["square", "circle"], "B", "shape", "1"),
    ]
    with (tmp_path / "mmbench_dev_20230712.tsv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path


def _answers(texts: dict[int, str]) -> list[dict]:
    return [{"question_id": index, "text": text} for index, text in texts.items()]


def test_prompts_follow_llava(mmbench_dir: Path):
    questions = {q.question_id: q for q in MMBENCH.questions(mmbench_dir)}
    assert questions[0].prompt == (
        "What colour?\nA. red\nB. blue\nC. green\nAnswer with the option's letter from the given choices directly."
    )
    # pandas reads "None" as missing, so the options stop before it; the hint goes first
    assert questions[1].prompt.startswith("Look closely.\nWhich shape?\nA. circle\nAnswer with")
    assert MMBENCH_CN.questions(mmbench_dir)[0].prompt.endswith("\nC. green\n请直接回答选项字母。")


def test_images_are_decoded_and_shared_by_copies(mmbench_dir: Path):
    questions = {q.question_id: q for q in MMBENCH.questions(mmbench_dir)}
    assert questions[2000000].image == questions[0].image == (mmbench_dir / "images" / "0.png").resolve()
    assert Image.open(questions[1000001].image).size == (4, 4)


def test_a_group_counts_only_if_every_rotation_is_right(mmbench_dir: Path):
    answers = _answers({0: "A", 1000000: "C. red", 2000000: "The answer is (B)", 1: "A", 1000001: "A"})
    result = MMBENCH.score(mmbench_dir, answers)
    assert result == {"circular_accuracy": 50.0, "vanilla_accuracy": 100.0,
                      "categories": {"colour": 100.0, "shape": 0.0}}
    assert "circular accuracy: 50.00" in MMBENCH.render(result)
    assert "vanilla accuracy (the original questions alone, no rotation): 100.00" in MMBENCH.render(result)


def test_every_row_needs_an_answer(mmbench_dir: Path):
    with pytest.raises(DataError, match="1 of 5 questions have no answer"):
        MMBENCH.score(mmbench_dir, _answers({0: "A", 1000000: "C", 2000000: "B", 1: "A"}))


OPTIONS = {"A": "red", "B": "blue", "C": "dark green"}


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("B. blue", "B"),
        ("Answer: [A]", "A"),
        ("A or B", None),  # two letters, and no single option text
        ("It is blue.", "B"),  # no letter: the one option text contained
        ("Dark Green", "C"),
        ("D", None),  # not an option here
        ("red or blue", None),
        ("I cannot tell", None),
    ],
)
def test_letter_extraction(text, letter):
    assert extract_letter(text, OPTIONS) == letter


def test_submission_table_has_prediction_as_seventh_column(mmbench_dir: Path):
    answers = _answers({0: "A", 1000000: "C", 2000000: "B", 1: "A", 1000001: "circle"})
    header, rows = MMBENCH.submission_table(mmbench_dir, answers)
    assert header == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert len(rows) == 5
    assert rows[4][:2] == ["1000001", "Which shape?"] and rows[4][6] == "circle"


def test_single_tsv_required(tmp_path: Path):
    with pytest.raises(DataError, match="exactly one MMBench .tsv, found 0"):
        MMBENCH.questions(tmp_path)


@pytest.mark.parametrize("benchmark", [MMBENCH, MMBENCH_CN], ids=lambda b: b.name)
def test_upload_sheet_without_category_is_scored_with_unknown_category(mmbench_dir: Path, tmp_path: Path, benchmark):
    """LLaVA's upload sheet drops hint, category and image: it can still be scored, under category "unknown"."""
    answers = _answers({0: "A", 1000000: "C. red", 2000000: "The answer is (B)", 1: "A", 1000001: "A"})
    header, rows = benchmark.submission_table(mmbench_dir, answers)
    assert "category" not in header
    sheet_dir = tmp_path / "sheet"
    sheet_dir.mkdir()
    with (sheet_dir / "upload.tsv").open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)
    result = benchmark.score(sheet_dir, answers)
    assert result == {"circular_accuracy": 50.0, "vanilla_accuracy": 100.0, "categories": {"unknown": 50.0}}
    assert "unknown" in benchmark.render(result)
