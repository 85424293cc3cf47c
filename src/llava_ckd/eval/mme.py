"""MME: paired yes/no questions per image over 14 subtasks.

data_dir:
- `questions.jsonl`: LLaVA's `llava_mme.jsonl` (`question_id` = `<subtask>/<image>`, two questions
  share it; the prompt drops MME's " Please answer yes or no." and adds the short-answer suffix).
- `ground_truth/<subtask>.txt`: MME's eval-tool files, `image<TAB>question<TAB>Yes/No` per line.
- `images/<subtask>/<image>`: the MME_Benchmark_release_version images.

Scoring (LLaVA's `convert_answer_to_mme.py`, then MME's `calculation.py`): the ground-truth question
is the prompt without the suffix plus " Please answer yes or no." (or with two spaces, as 7 lines of
the ground truth have it). Answers are lowercased; exact "yes"/"no" stands, else the first 4
characters decide ("yes" in them, else "no" in them, else "other", always wrong). Subtask score =
accuracy×100 + accuracy+×100, accuracy+ being the share of images with both questions right.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from llava_ckd.data.conversations import SHORT_ANSWER_SUFFIX
from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.questions import EvalQuestion, read_llava_questions
from llava_ckd.eval.report import format_table
from llava_ckd.files import DataError, read_text

PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
YES_NO_INSTRUCTION = " Please answer yes or no."
QUESTIONS_PER_IMAGE = 2


def parse_yes_no(text: str) -> str:
    """"yes", "no" or "other", as MME's `calculation.py` reads an answer."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    if "yes" in text[:4]:
        return "yes"
    if "no" in text[:4]:
        return "no"
    return "other"


def read_ground_truth(path: Path) -> dict[tuple[str, str], str]:
    """(image, question) -> "yes"/"no" from one MME eval-tool file."""
    truth = {}
    for line_number, line in enumerate(read_text(path, "MME ground truth").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) != 3:
            raise DataError(f"{path}:{line_number}: expected image, question and answer separated by tabs")
        image, question, answer = fields
        truth[image, question] = answer.lower()
    return truth


def ground_truth_question(prompt: str) -> str:
    question = prompt.replace(SHORT_ANSWER_SUFFIX.strip(), "").strip()
    return question if YES_NO_INSTRUCTION.strip() in question else question + YES_NO_INSTRUCTION


def subtask_score(images: list[list[bool]]) -> float:
    """accuracy×100 + accuracy+×100 over images, each a list of per-question correctness."""
    answers = [correct for image in images for correct in image]
    accuracy = sum(answers) / len(answers)
    accuracy_plus = sum(all(image) for image in images) / len(images)
    return 100 * accuracy + 100 * accuracy_plus


@dataclass(frozen=True)
class Mme:
    name: str = "mme"
    max_new_tokens: int = 128

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        return read_llava_questions(data_dir / "questions.jsonl", data_dir / "images")

    def _expected(self, question: EvalQuestion, truth: dict[tuple[str, str], str]) -> str:
        image = str(question.question_id).split("/")[-1]
        asked = ground_truth_question(question.prompt)
        double_spaced = asked.replace(YES_NO_INSTRUCTION, " " + YES_NO_INSTRUCTION)
        for key in ((image, asked), (image, double_spaced)):
            if key in truth:
                return truth[key]
        raise DataError(f"no MME ground truth for {question.question_id}: {asked!r}")

    def score(self, data_dir: Path, answers: list[dict]) -> dict:
        questions = self.questions(data_dir)
        texts = answer_texts(questions, answers)
        truths = {task: read_ground_truth(data_dir / "ground_truth" / f"{task}.txt") for task in PERCEPTION + COGNITION}
        per_image: dict[str, dict[str, list[bool]]] = {task: defaultdict(list) for task in truths}
        for question, text in zip(questions, texts, strict=True):
            task = question.category
            if task not in truths:
                raise DataError(f"unknown MME subtask {task!r} for question {question.question_id}")
            correct = parse_yes_no(text) == self._expected(question, truths[task])
            per_image[task][str(question.question_id)].append(correct)
        subtasks = {}
        for task, images in per_image.items():
            if any(len(image) != QUESTIONS_PER_IMAGE for image in images.values()):
                raise DataError(f"MME subtask {task}: every image needs exactly {QUESTIONS_PER_IMAGE} questions")
            subtasks[task] = subtask_score(list(images.values()))
        return {
            "perception": sum(subtasks[task] for task in PERCEPTION),
            "cognition": sum(subtasks[task] for task in COGNITION),
            "subtasks": subtasks,
        }

    def render(self, result: dict) -> str:
        rows = [(task, f"{score:.2f}") for task, score in result["subtasks"].items()]
        header = f"MME  perception: {result['perception']:.2f} / 2000  cognition: {result['cognition']:.2f} / 800"
        return f"{header}\n\n{format_table(('subtask', 'score'), rows)}"


MME = Mme()
