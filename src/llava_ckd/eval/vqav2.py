"""VQAv2: test-dev answers go to the EvalAI server; val questions can be scored here.

data_dir:
- `questions.jsonl`: LLaVA's `llava_vqav2_mscoco_test-dev2015.jsonl` (or a val file, same format).
- `images/`: the COCO images of that split (test2015 for test-dev).
- `llava_vqav2_mscoco_test2015.jsonl`: every test2015 question, needed only by `submission`.
- `v2_mscoco_val2014_annotations.json`: VQAv2's val annotations, needed only to score; each
  question needs one, extra annotations are ignored.

`submission` is LLaVA's `convert_vqav2_for_submission.py`: `[{"question_id", "answer"}]` for every
test2015 question, answers through `evalai_process`, `""` where a question has no answer. Scoring runs
the official `vqaEval.py` rule (`vqav2_accuracy`) on those same processed answers, in percent, also
per answer type. An annotation with no human answers is an error naming the question, as `vqaEval.py`
(which divides by their number) fails on it too; it is not skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.questions import EvalQuestion, read_llava_questions
from llava_ckd.eval.report import accuracy_summary, render_scores
from llava_ckd.eval.vqa_normalize import evalai_process, vqav2_accuracy
from llava_ckd.files import DataError, read_json, read_jsonl

ALL_TEST_QUESTIONS = "llava_vqav2_mscoco_test2015.jsonl"
ANNOTATIONS = "v2_mscoco_val2014_annotations.json"


@dataclass(frozen=True)
class Vqav2:
    name: str = "vqav2"
    max_new_tokens: int = 128

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        return read_llava_questions(data_dir / "questions.jsonl", data_dir / "images")

    def submission(self, data_dir: Path, answers: list[dict]) -> list[dict]:
        """`[{"question_id", "answer"}]` for every test2015 question; `""` where unanswered."""
        processed = {str(a["question_id"]): evalai_process(a["text"]) for a in answers}
        test_questions = read_jsonl(data_dir / ALL_TEST_QUESTIONS, "VQAv2 test2015 question list")
        return [
            {"question_id": q["question_id"], "answer": processed.get(str(q["question_id"]), "")}
            for q in test_questions
        ]

    def score(self, data_dir: Path, answers: list[dict]) -> dict:
        annotations = read_json(data_dir / ANNOTATIONS, f"VQAv2 annotations ({ANNOTATIONS})")["annotations"]
        by_id = {str(a["question_id"]): a for a in annotations}
        questions = self.questions(data_dir)
        scores: list[float] = []
        answer_types: list[str] = []
        for question, text in zip(questions, answer_texts(questions, answers), strict=True):
            annotation = by_id.get(str(question.question_id))
            if annotation is None:
                raise DataError(f"no VQAv2 annotation for question {question.question_id}")
            human_answers = [a["answer"] for a in annotation["answers"]]
            if not human_answers:
                raise DataError(f"{data_dir / ANNOTATIONS}: the VQAv2 annotation of question "
                                    f"{question.question_id} has no human answers")
            scores.append(vqav2_accuracy(evalai_process(text), human_answers))
            answer_types.append(annotation["answer_type"])
        return accuracy_summary(scores, answer_types=answer_types)

    def render(self, result: dict) -> str:
        breakdowns = {"answer type": result["answer_types"]}
        return render_scores(f"VQAv2 (n={result['n']})", "accuracy", result["accuracy"], breakdowns)


VQAV2 = Vqav2()
