"""The project's synthetic shapes VQA benchmark (written by `llava-ckd make-data`).

data_dir:
- `questions.jsonl`: `{"question_id", "image", "text", "category"}`; `text` is the whole prompt.
- `answer_key.jsonl`: `{"question_id", "answer", "category"}`.
- `images/`: the rendered images `image` names.

Prediction: the text stripped, one trailing period removed, lowercased; correct on exact equality
with `answer`. Accuracy in percent, overall and per category.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.files import EvalDataError, read_jsonl
from llava_ckd.eval.questions import EvalQuestion, read_llava_questions
from llava_ckd.eval.report import accuracy_summary, render_scores


def prediction(text: str) -> str:
    return text.strip().removesuffix(".").lower()


@dataclass(frozen=True)
class Synthetic:
    name: str = "synthetic"
    max_new_tokens: int = 8  # answers are one word

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        return read_llava_questions(data_dir / "questions.jsonl", data_dir / "images")

    def score(self, data_dir: Path, answers: list[dict]) -> dict:
        key = {str(k["question_id"]): k for k in read_jsonl(data_dir / "answer_key.jsonl", "synthetic answer key")}
        questions = self.questions(data_dir)
        correct: list[bool] = []
        categories: list[str] = []
        for question, text in zip(questions, answer_texts(questions, answers), strict=True):
            expected = key.get(str(question.question_id))
            if expected is None:
                raise EvalDataError(f"answer_key.jsonl has no answer for question {question.question_id}")
            correct.append(prediction(text) == expected["answer"])
            categories.append(expected["category"])
        return accuracy_summary(correct, categories=categories)

    def render(self, result: dict) -> str:
        breakdowns = {"category": result["categories"]}
        return render_scores(f"Synthetic (n={result['n']})", "accuracy", result["accuracy"], breakdowns)


SYNTHETIC = Synthetic()
