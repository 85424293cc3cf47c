"""TextVQA (val), with LLaVA's reference OCR tokens in the prompt.

data_dir:
- `questions.jsonl`: LLaVA's `llava_textvqa_val_v051_ocr.jsonl`: `question_id` is the image id
  (several questions share it) and the prompt has three lines: question, `Reference OCR token: ...`,
  suffix. Leaving out the OCR line costs ~13 points.
- `images/`: TextVQA's train_images (the val split's images live there).
- `TextVQA_0.5.1_val.json`: TextVQA's annotations (`{"data": [{"image_id", "question", "answers"}]}`),
  needed only to score.

Scoring (LLaVA's `eval_textvqa.py` with mmf's `TextVQAAccuracyEvaluator`): each answer finds its
annotation by (image id, the prompt's question line lowercased); prediction and the 10 human
answers go through `evalai_process`; the score is the VQA accuracy, in percent. An annotation with no
human answers is an error naming the question, as in the official scorer (mmf asserts 10 answers); it
is not skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.questions import EvalQuestion, read_llava_questions
from llava_ckd.eval.report import accuracy_summary, render_scores
from llava_ckd.eval.vqa_normalize import textvqa_accuracy
from llava_ckd.files import DataError, read_json

ANNOTATIONS = "TextVQA_0.5.1_val.json"
OCR_LINE_START = "Reference OCR token: "


def question_from_prompt(prompt: str) -> str:
    """The lowercased question line of a LLaVA TextVQA prompt, as `eval_textvqa.py` finds it."""
    lines = prompt.split("\n")
    if OCR_LINE_START in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith(OCR_LINE_START) else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise DataError(f"not a LLaVA TextVQA prompt: {prompt!r}")
    return question.lower()


@dataclass(frozen=True)
class TextVqa:
    name: str = "textvqa"
    max_new_tokens: int = 128

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        return read_llava_questions(data_dir / "questions.jsonl", data_dir / "images")

    def score(self, data_dir: Path, answers: list[dict]) -> dict:
        annotations = read_json(data_dir / ANNOTATIONS, f"TextVQA annotations ({ANNOTATIONS})")["data"]
        human_answers = {(a["image_id"], a["question"].lower()): a["answers"] for a in annotations}
        questions = self.questions(data_dir)
        scores = []
        for question, text in zip(questions, answer_texts(questions, answers), strict=True):
            key = (question.question_id, question_from_prompt(question.prompt))
            if key not in human_answers:
                raise DataError(f"no TextVQA annotation for image {key[0]}, question {key[1]!r}")
            if not human_answers[key]:
                raise DataError(f"{data_dir / ANNOTATIONS}: the TextVQA annotation of question {key[0]} "
                                    f"({key[1]!r}) has no human answers; the official scorer needs 10")
            scores.append(textvqa_accuracy(text, human_answers[key]))
        return accuracy_summary(scores)

    def render(self, result: dict) -> str:
        return render_scores(f"TextVQA (n={result['n']})", "accuracy", result["accuracy"])


TEXTVQA = TextVqa()
