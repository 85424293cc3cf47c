"""LLaVA answer files: one JSON line per question.

A line is `{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}`;
`text` is the model's stripped output. Scorers look answers up by `question_id`, and by
(`question_id`, `prompt`) in sets where several questions share an id (MME: two per image; TextVQA:
the image id).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Hashable, Iterable
from pathlib import Path

from llava_ckd.eval.questions import EvalQuestion
from llava_ckd.files import DataError, iter_jsonl

REQUIRED_FIELDS = ("question_id", "text")
SHOWN_IDS = 5


def read_answers(path: Path) -> list[dict]:
    """All answers of `path`; a line that is not an object with `question_id` and string `text` raises."""
    answers = []
    for line_number, record in iter_jsonl(path, "answer file"):
        missing = [field for field in REQUIRED_FIELDS if field not in record]
        if missing:
            raise DataError(f"{path}:{line_number}: answer lacks {', '.join(missing)}")
        if not isinstance(record["text"], str):
            raise DataError(f"{path}:{line_number}: answer text is not a string")
        answers.append(record)
    return answers


def write_answers(path: Path, answers: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for answer in answers:
            f.write(json.dumps(answer, ensure_ascii=False) + "\n")


def answer_record(question: EvalQuestion, text: str, model_id: str, metadata: dict | None = None) -> dict:
    return {
        "question_id": question.question_id,
        "prompt": question.prompt,
        "text": text,
        "answer_id": uuid.uuid4().hex,
        "model_id": model_id,
        "metadata": metadata or {},
    }


def answer_texts(questions: list[EvalQuestion], answers: list[dict]) -> list[str]:
    """The answer text of each question, in question order.

    Raises if a question has no answer, if an answer matches no question, or if one is answered twice.
    """
    ids_are_unique = len({str(q.question_id) for q in questions}) == len(questions)

    def question_key(question: EvalQuestion) -> Hashable:
        return str(question.question_id) if ids_are_unique else (str(question.question_id), question.prompt)

    def answer_key(answer: dict) -> Hashable:
        if ids_are_unique:
            return str(answer["question_id"])
        if "prompt" not in answer:
            raise DataError("answers need a `prompt` here: several questions share a question_id")
        return str(answer["question_id"]), answer["prompt"]

    texts: dict[Hashable, str] = {}
    for answer in answers:
        key = answer_key(answer)
        if key in texts:
            raise DataError(f"question answered twice: {key}")
        texts[key] = answer["text"]
    keys = [question_key(q) for q in questions]
    missing = [key for key in keys if key not in texts]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(keys)} questions have no answer, e.g. {missing[:SHOWN_IDS]}"
        )
    unknown = texts.keys() - set(keys)
    if unknown:
        raise DataError(f"{len(unknown)} answers match no question, e.g. {sorted(unknown)[:SHOWN_IDS]}")
    return [texts[key] for key in keys]
