"""ScienceQA (test split, LLaVA's CQM-A prompt format); headline is the IMG subset.

data_dir:
- `questions_CQM-A.json`: LLaVA's `llava_test_CQM-A.json`, a conversation file: the human turn is the
  prompt (context, question, `A. ...` option lines), the gpt turn the correct letter.
- `images/<id>/image.png`: ScienceQA's test images (`images/test` in LLaVA's layout).

Prompt (LLaVA's `model_vqa_science.py --single-pred-prompt`): the human turn without `<image>`,
stripped, then the multiple-choice suffix. Parse (LLaVA's `eval_science_qa.py`): text exactly one of
A-E; else `"X. "` at the start; else `The answer is ([A-Z]).` matching exactly once; else failed. A
letter beyond the question's options is wrong. IMG = questions with an image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.questions import MULTIPLE_CHOICE_SUFFIX, EvalQuestion
from llava_ckd.eval.report import format_table
from llava_ckd.files import read_json

OPTIONS = "ABCDE"
ANSWER_SENTENCE = re.compile(r"The answer is ([A-Z]).")
IMAGE_PLACEHOLDER = "<image>"


def parse_choice(text: str) -> str | None:
    """The option letter LLaVA's parser reads from `text`, or None when it fails."""
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = ANSWER_SENTENCE.findall(text)
    return found[0] if len(found) == 1 else None


def choice_count(question_text: str) -> int:
    """How many `A. `, `B. `, ... option lines follow the last `A. ` line."""
    position = question_text.rfind("\nA. ")
    count = 0
    for letter in OPTIONS:
        position = question_text.find(f"\n{letter}. ", position)
        if position < 0:
            break
        count += 1
    return count


def _human_turn(record: dict) -> str:
    return record["conversations"][0]["value"]


@dataclass(frozen=True)
class ScienceQA:
    name: str = "scienceqa"
    max_new_tokens: int = 1024

    def _records(self, data_dir: Path) -> list[dict]:
        return read_json(data_dir / "questions_CQM-A.json", "ScienceQA question file")

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        image_dir = (data_dir / "images").resolve()
        return [
            EvalQuestion(
                question_id=record["id"],
                image=image_dir / record["image"] if "image" in record else None,
                prompt=_human_turn(record).replace(IMAGE_PLACEHOLDER, "").strip() + MULTIPLE_CHOICE_SUFFIX,
            )
            for record in self._records(data_dir)
        ]

    def score(self, data_dir: Path, answers: list[dict]) -> dict:
        records = self._records(data_dir)
        texts = answer_texts(self.questions(data_dir), answers)
        correct = []
        for record, text in zip(records, texts, strict=True):
            choice = parse_choice(text)
            valid = OPTIONS[: choice_count(_human_turn(record))]
            correct.append(choice is not None and choice in valid and choice == record["conversations"][1]["value"])
        with_image = [ok for record, ok in zip(records, correct, strict=True) if "image" in record]
        return {
            "img_accuracy": 100 * sum(with_image) / len(with_image),
            "accuracy": 100 * sum(correct) / len(correct),
            "img_correct": sum(with_image),
            "img_total": len(with_image),
        }

    def render(self, result: dict) -> str:
        rows = [
            ("IMG", f"{result['img_accuracy']:.2f}", f"{result['img_correct']}/{result['img_total']}"),
            ("all", f"{result['accuracy']:.2f}", ""),
        ]
        return f"ScienceQA  IMG accuracy: {result['img_accuracy']:.2f}\n\n" + format_table(
            ("subset", "accuracy", "correct"), rows
        )


SCIENCEQA = ScienceQA()
