"""GQA (testdev-balanced): exact-match accuracy over the balanced questions.

data_dir:
- `questions.jsonl`: LLaVA's `llava_gqa_testdev_balanced.jsonl` (suffix included).
- `images/`: the GQA images.
- `testdev_balanced_questions.json`: GQA's ground truth (question id -> `answer`, `isBalanced`,
  `types`), needed only to score.

Prediction (LLaVA's `convert_gqa_for_eval.py`): `text.rstrip('.').lower()`. Scoring (GQA's `eval.py`):
exact string equality with `answer` over the balanced questions, also per structural and semantic
type; a balanced question without a prediction is an error. `predictions` writes the file GQA's own
`eval.py` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.questions import EvalQuestion, read_llava_questions
from llava_ckd.eval.report import accuracy_summary, render_scores
from llava_ckd.files import DataError, read_json

GROUND_TRUTH = "testdev_balanced_questions.json"


def prediction(text: str) -> str:
    return text.rstrip(".").lower()


@dataclass(frozen=True)
class Gqa:
    name: str = "gqa"
    max_new_tokens: int = 128

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        return read_llava_questions(data_dir / "questions.jsonl", data_dir / "images")

    def predictions(self, data_dir: Path, answers: list[dict]) -> list[dict]:
        """`[{"questionId", "prediction"}]` for every question, the input of GQA's `eval.py`."""
        questions = self.questions(data_dir)
        texts = answer_texts(questions, answers)
        return [
            {"questionId": q.question_id, "prediction": prediction(t)}
            for q, t in zip(questions, texts, strict=True)
        ]

    def score(self, data_dir: Path, answers: list[dict]) -> dict:
        truth = read_json(data_dir / GROUND_TRUTH, "GQA ground truth (GQA's testdev_balanced_questions.json)")
        predicted = {str(p["questionId"]): p["prediction"] for p in self.predictions(data_dir, answers)}
        correct: list[bool] = []
        structural: list[str] = []
        semantic: list[str] = []
        for question_id, item in truth.items():
            if not item["isBalanced"]:
                continue
            if question_id not in predicted:
                raise DataError(f"no prediction for GQA question {question_id}")
            correct.append(predicted[question_id] == item["answer"])
            structural.append(item["types"]["structural"])
            semantic.append(item["types"]["semantic"])
        return accuracy_summary(correct, structural=structural, semantic=semantic)

    def render(self, result: dict) -> str:
        breakdowns = {"structural": result["structural"], "semantic": result["semantic"]}
        return render_scores(f"GQA (n={result['n']})", "accuracy", result["accuracy"], breakdowns)


GQA = Gqa()
