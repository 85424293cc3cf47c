"""MMBench (dev, circular evaluation, with the vanilla accuracy of the original questions beside), English and
Chinese.

data_dir holds exactly one `.tsv`: MMBench's dev file (`index, question, hint, A..D, answer, category,
image, ...`; `image` is base64, or a row index for copies that share that row's image). Circular
evaluation needs the rotated copies in the TSV: row index + k·10⁶ is copy k of question index.
`questions` decodes the images into `data_dir/images/<index>.<ext>`. Scoring needs only `index`,
`question`, `A..D` and `answer`, so LLaVA's upload sheet (no hint, category or image) scores too; a
question without a category (no such column, or an empty cell) is reported under "unknown".

Prompt (LLaVA's `model_vqa_mmbench.py --single-pred-prompt`): `hint + "\\n" + question` (hint only
when present), `"\\nA. opt"` for the options up to the first empty one, then the multiple-choice
suffix (`mmbench-cn`: the Chinese one). Empty means what pandas reads as missing ("", "NA", "nan",
"None", ...), as LLaVA reads the TSV with pandas.

Letter extraction (OpenCompass): replace `.()[],:;!*#{}` by spaces and split; exactly one bare
option letter -> that letter; else exactly one option text contained in the answer (case-insensitive)
-> its letter; else unresolved, which is wrong (no judge model here). A question counts only if all its
rotated copies are right; reported overall and per category, in percent. `submission_table` is
LLaVA's `convert_mmbench_for_submission.py` for the OpenCompass server, as TSV.
"""

from __future__ import annotations

import base64
import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.questions import MULTIPLE_CHOICE_SUFFIX, MULTIPLE_CHOICE_SUFFIX_CN, EvalQuestion
from llava_ckd.eval.report import render_scores
from llava_ckd.files import DataError, read_text

OPTION_LETTERS = "ABCD"
COPY_STRIDE = 1_000_000
LETTER_SEPARATORS = ".()[],:;!*#{}"
PANDAS_MISSING = {
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
}  # fmt: skip
IMAGE_REFERENCE_MAX_LENGTH = 64
CSV_FIELD_LIMIT = 2**31 - 1
SUBMISSION_DROPPED_COLUMNS = ("hint", "category", "source", "image", "comment", "l2-category")
SUBMISSION_PREDICTION_POSITION = 6
UNKNOWN_CATEGORY = "unknown"


def is_missing(value: str | None) -> bool:
    return value is None or value in PANDAS_MISSING or value.lower() in ("nan", "none")


def options_of(row: dict) -> dict[str, str]:
    """Option letter -> text, up to the first missing option."""
    options = {}
    for letter in OPTION_LETTERS:
        if is_missing(row.get(letter)):
            break
        options[letter] = row[letter]
    return options


def build_prompt(row: dict, suffix: str) -> str:
    question = row["question"] if is_missing(row.get("hint")) else row["hint"] + "\n" + row["question"]
    return question + "".join(f"\n{letter}. {text}" for letter, text in options_of(row).items()) + suffix


def extract_letter(text: str, options: dict[str, str]) -> str | None:
    """The option letter an answer names, or None when it is unresolved."""
    cleaned = text
    for separator in LETTER_SEPARATORS:
        cleaned = cleaned.replace(separator, " ")
    words = cleaned.split()
    letters = [letter for letter in options if letter in words]
    if len(letters) == 1:
        return letters[0]
    contained = [letter for letter, option in options.items() if option.lower() in text.lower()]
    return contained[0] if len(contained) == 1 else None


def read_tsv(data_dir: Path) -> tuple[list[str], list[dict]]:
    """(header, rows) of the one `.tsv` in `data_dir`."""
    found = sorted(data_dir.glob("*.tsv"))
    if len(found) != 1:
        raise DataError(f"{data_dir}: expected exactly one MMBench .tsv, found {len(found)}")
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(io.StringIO(read_text(found[0], "MMBench .tsv"), newline=""), delimiter="\t")
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def category_of(row: dict) -> str:
    """The row's category; "unknown" without one (LLaVA's upload sheet has no category column)."""
    category = row.get("category")
    return UNKNOWN_CATEGORY if is_missing(category) else category


def _image_suffix(data: bytes) -> str:
    return ".png" if data.startswith(b"\x89PNG") else ".jpg"


def _write_images(rows: list[dict], image_dir: Path) -> dict[str, Path]:
    """Decode each row's image once; rows whose `image` is another row's index share its file."""
    image_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for row in rows:
        if len(row["image"]) > IMAGE_REFERENCE_MAX_LENGTH:
            data = base64.b64decode(row["image"])
            path = image_dir / f"{row['index']}{_image_suffix(data)}"
            if not path.exists():
                path.write_bytes(data)
            paths[row["index"]] = path.resolve()
    for row in rows:
        if len(row["image"]) <= IMAGE_REFERENCE_MAX_LENGTH:
            paths[row["index"]] = paths[row["image"]]
    return paths


@dataclass(frozen=True)
class MMBench:
    name: str
    title: str
    suffix: str
    max_new_tokens: int = 1024

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        _, rows = read_tsv(data_dir)
        images = _write_images(rows, data_dir / "images")
        return [self._question(row, images[row["index"]]) for row in rows]

    def _question(self, row: dict, image: Path | None) -> EvalQuestion:
        return EvalQuestion(
            question_id=int(row["index"]),
            image=image,
            prompt=build_prompt(row, self.suffix),
            category=row.get("category"),
        )

    def _texts(self, rows: list[dict], answers: list[dict]) -> list[str]:
        return answer_texts([self._question(row, None) for row in rows], answers)

    def score(self, data_dir: Path, answers: list[dict]) -> dict:
        header, rows = read_tsv(data_dir)
        if "answer" not in header:
            raise DataError(f"{data_dir}: the MMBench TSV has no answer column; convert it for the server")
        groups: dict[int, list[bool]] = defaultdict(list)
        group_category: dict[int, str] = {}
        originals = []
        for row, text in zip(rows, self._texts(rows, answers), strict=True):
            group = int(row["index"]) % COPY_STRIDE
            right = extract_letter(text, options_of(row)) == row["answer"]
            groups[group].append(right)
            group_category.setdefault(group, category_of(row))
            if int(row["index"]) < COPY_STRIDE:
                originals.append(right)
        per_category: dict[str, list[bool]] = defaultdict(list)
        for group, copies in groups.items():
            per_category[group_category[group]].append(all(copies))
        passed = [all(copies) for copies in groups.values()]
        return {
            "circular_accuracy": 100 * sum(passed) / len(passed),
            "vanilla_accuracy": 100 * sum(originals) / max(len(originals), 1),
            "categories": {name: 100 * sum(p) / len(p) for name, p in sorted(per_category.items())},
        }

    def submission_table(self, data_dir: Path, answers: list[dict]) -> tuple[list[str], list[list[str]]]:
        """(header, rows) of the OpenCompass upload: the TSV less hint/category/source/image/comment/
        l2-category, with `prediction` (the raw answer) as the 7th column."""
        header, rows = read_tsv(data_dir)
        kept = [column for column in header if column not in SUBMISSION_DROPPED_COLUMNS]
        out_header = [*kept[:SUBMISSION_PREDICTION_POSITION], "prediction", *kept[SUBMISSION_PREDICTION_POSITION:]]
        texts = self._texts(rows, answers)
        return out_header, [
            [text if column == "prediction" else row[column] for column in out_header]
            for row, text in zip(rows, texts, strict=True)
        ]

    def render(self, result: dict) -> str:
        breakdowns = {"category (circular)": result["categories"]}
        headline = render_scores(self.title, "circular accuracy", result["circular_accuracy"], breakdowns)
        first, rest = headline.split("\n", 1)
        return (f"{first}\nvanilla accuracy (the original questions alone, no rotation): "
                f"{result['vanilla_accuracy']:.2f}\n{rest}")


MMBENCH = MMBench(name="mmbench", title="MMBench", suffix=MULTIPLE_CHOICE_SUFFIX)
MMBENCH_CN = MMBench(name="mmbench-cn", title="MMBench-CN", suffix=MULTIPLE_CHOICE_SUFFIX_CN)
