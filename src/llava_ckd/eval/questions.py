"""`EvalQuestion`, what every benchmark hands to generation, and the LLaVA question-file reader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llava_ckd.files import read_jsonl

MULTIPLE_CHOICE_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
MULTIPLE_CHOICE_SUFFIX_CN = "\n请直接回答选项字母。"


@dataclass(frozen=True)
class EvalQuestion:
    """One question to generate an answer for.

    `prompt` is the user message without the `<image>` placeholder, suffix included; generation adds
    `"<image>\\n"` (when `image` is set) and the chat template. `question_id` is written back unchanged
    into the answer file.
    """

    question_id: str | int
    image: Path | None
    prompt: str
    category: str | None = None


def read_llava_questions(path: Path, image_dir: Path) -> list[EvalQuestion]:
    """A LLaVA question file (`{"question_id", "image", "text", "category"}` lines): text is the prompt."""
    image_dir = image_dir.resolve()
    return [
        EvalQuestion(
            question_id=record["question_id"],
            image=image_dir / record["image"],
            prompt=record["text"],
            category=record.get("category"),
        )
        for record in read_jsonl(path, "question file")
    ]
