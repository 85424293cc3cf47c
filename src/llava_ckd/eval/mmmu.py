"""MMMU (val): multiple-choice and open questions over 30 subjects.

data_dir:
- `questions.jsonl`: one line per question with MMMU's fields: `id` (`validation_<Subject>_<n>`),
  `question`, `options` (a list, or MMMU's string form of one), `answer` (a letter, a string or a
  list of strings), `question_type` (`multiple-choice` or `open`), and `image`: the question's first
  image as a file name under `images/`, or null.
- `images/`: those images.

Prompt (MMMU's LLaVA config): multiple choice `question\\n(A) opt\\n(B) opt\\n\\nAnswer with the option's
letter from the given choices directly.`; open `question\\nAnswer the question using a single word or
phrase.`. Scoring (MMMU's `eval_utils.py`): a multiple-choice answer is parsed as "(X)", then " X ",
then, for answers of more than 5 words, option text; several candidates -> the last in the text;
none -> a random letter from one `random.Random(42)` drawn in question order. Open answers: key
sub-responses, numbers extracted, normalised; correct on a substring or exact-number match. Accuracy
in percent, overall and per subject.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llava_ckd.data.conversations import SHORT_ANSWER_SUFFIX
from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.questions import MULTIPLE_CHOICE_SUFFIX, EvalQuestion
from llava_ckd.eval.report import accuracy_summary, render_scores
from llava_ckd.files import read_jsonl

RANDOM_SEED = 42
MULTIPLE_CHOICE = "multiple-choice"
EDGE_PUNCTUATION = (",", ".", "!", "?", ";", ":", "'")
MIN_WORDS_FOR_TEXT_MATCH = 6
KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
TRIVIAL_RESPONSES = (":", ",", ".", "!", "?", ";", "'")
NUMBER_WITH_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
NUMBER_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
NUMBER_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def options_of(record: dict) -> dict[str, str]:
    options = record["options"]
    if isinstance(options, str):
        options = ast.literal_eval(options)
    return {chr(ord("A") + i): option for i, option in enumerate(options)}


def build_prompt(record: dict) -> str:
    if record["question_type"] != MULTIPLE_CHOICE:
        return record["question"] + SHORT_ANSWER_SUFFIX
    listed = "".join(f"({letter}) {option}\n" for letter, option in options_of(record).items())
    return record["question"] + "\n" + listed + MULTIPLE_CHOICE_SUFFIX


def _choice_candidates(response: str, options: dict[str, str]) -> tuple[list[str], Callable[[str], int]]:
    """Candidate letters and where each last appears, by the first rule that finds any."""
    bracketed = [letter for letter in options if f"({letter})" in response]
    if bracketed:
        return bracketed, lambda letter: response.rfind(f"({letter})")
    bare = [letter for letter in options if f" {letter} " in response]
    if bare or len(response.split()) < MIN_WORDS_FOR_TEXT_MATCH:
        return bare, lambda letter: response.rfind(f" {letter} ")
    lowered = response.lower()
    by_text = [letter for letter, option in options.items() if option.lower() in lowered]
    return by_text, lambda letter: lowered.rfind(options[letter].lower())


def parse_choice(response: str, options: dict[str, str], rng: random.Random) -> str:
    """MMMU's `parse_multi_choice_response`: the last-placed candidate, or a random letter if none."""
    for mark in EDGE_PUNCTUATION:
        response = response.strip(mark)
    candidates, position = _choice_candidates(f" {response} ", options)
    if not candidates:
        return rng.choice(list(options))
    return max(candidates, key=position)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def normalize_open(text: str) -> list[str | float]:
    """A number rounded to 2 decimals, or the lowercased string (one letter padded both ways)."""
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
    return NUMBER_WITH_COMMAS.findall(text) + NUMBER_SCIENTIFIC.findall(text) + NUMBER_SIMPLE.findall(text)


def _key_responses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    sentences = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for index, sentence in enumerate(sentences):
        indicators = KEY_INDICATORS + (("=",) if index == len(sentences) - 1 else ())
        shortest = ""
        for indicator in (i for i in indicators if i in sentence):
            tail = sentence.split(indicator)[-1].strip()
            if not shortest or len(tail) < len(shortest):  # an empty tail gives way to the next one
                shortest = tail
        if shortest and shortest not in TRIVIAL_RESPONSES:
            keys.append(shortest)
    return keys or [response]


def parse_open(response: str) -> list[str | float]:
    """MMMU's `parse_open_response`: candidate answers, normalised."""
    keys = _key_responses(response)
    candidates = keys + [number for key in keys for number in extract_numbers(key)]
    return list(dict.fromkeys(value for candidate in candidates for value in normalize_open(candidate)))


def open_is_correct(gold: str | list[str], predictions: list[str | float]) -> bool:
    golds = [value for answer in (gold if isinstance(gold, list) else [gold]) for value in normalize_open(answer)]
    for prediction in predictions:
        if isinstance(prediction, str):
            if any(isinstance(g, str) and g in prediction for g in golds):
                return True
        elif prediction in golds:
            return True
    return False


def subject_of(question_id: str) -> str:
    return "_".join(question_id.split("_")[1:-1])


@dataclass(frozen=True)
class Mmmu:
    name: str = "mmmu"
    max_new_tokens: int = 1024

    def _records(self, data_dir: Path) -> list[dict]:
        return read_jsonl(data_dir / "questions.jsonl", "MMMU question file")

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        image_dir = (data_dir / "images").resolve()
        return [
            EvalQuestion(
                question_id=record["id"],
                image=image_dir / record["image"] if record.get("image") else None,
                prompt=build_prompt(record),
                category=subject_of(record["id"]),
            )
            for record in self._records(data_dir)
        ]

    def score(self, data_dir: Path, answers: list[dict]) -> dict:
        records = self._records(data_dir)
        texts = answer_texts(self.questions(data_dir), answers)
        rng = random.Random(RANDOM_SEED)
        correct_answers: list[bool] = []
        for record, text in zip(records, texts, strict=True):
            gold = record["answer"]
            if record["question_type"] == MULTIPLE_CHOICE:
                choice = parse_choice(text, options_of(record), rng)
                correct = choice in gold if isinstance(gold, list) else choice == gold
            else:
                correct = open_is_correct(gold, parse_open(text))
            correct_answers.append(correct)
        return accuracy_summary(correct_answers, categories=[subject_of(record["id"]) for record in records])

    def render(self, result: dict) -> str:
        breakdowns = {"subject": result["categories"]}
        return render_scores(f"MMMU (n={result['n']})", "accuracy", result["accuracy"], breakdowns)


MMMU = Mmmu()
