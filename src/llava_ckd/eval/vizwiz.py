"""VizWiz VQA: test answers go to the EvalAI server; val can be scored here.

data_dir:
- `questions.jsonl`: LLaVA's `llava_test.jsonl` (8,000 test questions; the prompt asks to answer
  "Unanswerable" when the image is insufficient) or a val file in the same format.
- `images/`: the VizWiz images of that split.
- `val.json`: VizWiz's val annotations (`[{"image", "answers": [{"answer"}], "answer_type"}]`),
  needed only to score a val question file; questions find their annotation by image name.

`submission` is LLaVA's `convert_vizwiz_for_submission.py`: `[{"image", "answer"}]` for every
question, answers through `evalai_process`. Scoring runs the VizWiz server's rule on that answer
(`vizwiz_accuracy`: prediction normalised, human answers verbatim), in percent, per answer type too.
An annotation with no human answers is an error naming the question, as the official scorer (which
divides by their number) fails on it too; it is not skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.questions import EvalQuestion, read_llava_questions
from llava_ckd.eval.report import accuracy_summary, render_scores
from llava_ckd.eval.vqa_normalize import evalai_process, vizwiz_accuracy
from llava_ckd.files import DataError, read_json

ANNOTATIONS = "val.json"


@dataclass(frozen=True)
class VizWiz:
    name: str = "vizwiz"
    max_new_tokens: int = 128

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        return read_llava_questions(data_dir / "questions.jsonl", data_dir / "images")

    def submission(self, data_dir: Path, answers: list[dict]) -> list[dict]:
        """`[{"image", "answer"}]` for every question, what the EvalAI server reads."""
        questions = self.questions(data_dir)
        texts = answer_texts(questions, answers)
        return [{"image": q.image.name, "answer": evalai_process(t)} for q, t in zip(questions, texts, strict=True)]

    def score(self, data_dir: Path, answers: list[dict]) -> dict:
        annotations = read_json(data_dir / ANNOTATIONS, f"VizWiz val annotations ({ANNOTATIONS})")
        by_image = {a["image"]: a for a in annotations}
        scores: list[float] = []
        answer_types: list[str] = []
        questions = self.questions(data_dir)
        for question, text in zip(questions, answer_texts(questions, answers), strict=True):
            image = question.image.name
            if image not in by_image:
                raise DataError(f"no VizWiz annotation for image {image}")
            annotation = by_image[image]
            human_answers = [a["answer"] for a in annotation["answers"]]
            if not human_answers:
                raise DataError(f"{data_dir / ANNOTATIONS}: the VizWiz annotation of question "
                                    f"{question.question_id} ({image}) has no human answers")
            scores.append(vizwiz_accuracy(evalai_process(text), human_answers))  # the answer as submitted
            answer_types.append(annotation["answer_type"])
        return accuracy_summary(scores, answer_types=answer_types)

    def render(self, result: dict) -> str:
        breakdowns = {"answer type": result["answer_types"]}
        return render_scores(f"VizWiz (n={result['n']})", "accuracy", result["accuracy"], breakdowns)


VIZWIZ = VizWiz()
