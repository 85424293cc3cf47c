"""The project's synthetic shapes VQA benchmark (written by `llava-ckd make-data`).

data_dir:
- `questions.jsonl`: `{"question_id", "image", "text", "category"}`; `text` is the whole prompt.
- `answer_key.jsonl`: `{"question_id", "answer", "category"}`; on a benchmark with uncertain answers
  (`make-data --blend`) also `"answers"` (10 annotators' answers) and `"distribution"` (each answer's
  probability; `answer` is the modal one).
- `images/`: the rendered images `image` names.
- `../spec.json` (optional): the answer vocabulary per category, the candidates the model's likelihood is
  taken over.

Prediction: the text stripped, one trailing period removed, lowercased. With one answer per question: correct on
exact equality with `answer`, accuracy in percent, overall and per category. With 10 answers: `accuracy` is
VQAv2's soft accuracy (`vqav2_accuracy`), beside it `modal_accuracy` (equality with the modal answer) and
`bayes_accuracy`, the soft accuracy of the modal answer itself: the best any model can score on these answers.

Given the model's log-probability of every candidate answer (`score(..., log_probs=...)`, which `llava-ckd eval`
computes), also: `log_likelihood`, the mean over questions of sum_a p(a) log q(a) with p the answer distribution
and q the model's distribution renormalised over the candidates (nats; `bayes_log_likelihood` is the same with q
= p, the ceiling), and `ece`, the expected calibration error in percent over 10 equal-width bins of the model's
confidence (its largest q) against the share of the question's answers that equal its most likely candidate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.questions import EvalQuestion, read_llava_questions
from llava_ckd.eval.report import accuracy_summary, render_scores
from llava_ckd.eval.vqa_normalize import vqav2_accuracy
from llava_ckd.files import DataError, read_jsonl

CALIBRATION_BINS = 10


def prediction(text: str) -> str:
    return text.strip().removesuffix(".").lower()


def answer_distribution(key: dict) -> dict[str, float]:
    return key.get("distribution") or {key["answer"]: 1.0}


def human_answers(key: dict) -> list[str]:
    return key.get("answers") or [key["answer"]]


@dataclass(frozen=True)
class Synthetic:
    name: str = "synthetic"
    max_new_tokens: int = 8  # answers are one word

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        return read_llava_questions(data_dir / "questions.jsonl", data_dir / "images")

    def answer_candidates(self, data_dir: Path) -> dict[str, list[str]] | None:
        """Per question id, the answers of its category that the model's likelihood is taken over (None for a
        split without the benchmark's spec.json beside it)."""
        spec_path = Path(data_dir).parent / "spec.json"
        if not spec_path.is_file():
            return None
        try:
            vocabulary = json.loads(spec_path.read_text())["answers"]
        except (OSError, json.JSONDecodeError, KeyError) as err:
            raise DataError(f"{spec_path}: no answer vocabulary ({err})") from err
        return {str(q.question_id): vocabulary[q.category] for q in self.questions(data_dir)}

    def score(self, data_dir: Path, answers: list[dict], log_probs: dict[str, dict[str, float]] | None = None) -> dict:
        key = {str(k["question_id"]): k for k in read_jsonl(data_dir / "answer_key.jsonl", "synthetic answer key")}
        questions = self.questions(data_dir)
        keys = []
        for question in questions:
            if (expected := key.get(str(question.question_id))) is None:
                raise DataError(f"answer_key.jsonl has no answer for question {question.question_id}")
            keys.append(expected)
        predictions = [prediction(text) for text in answer_texts(questions, answers)]
        categories = [k["category"] for k in keys]
        modal = [p == k["answer"] for p, k in zip(predictions, keys, strict=True)]
        if not any("answers" in k for k in keys):
            result = accuracy_summary(modal, categories=categories)
        else:
            soft = [vqav2_accuracy(p, human_answers(k)) for p, k in zip(predictions, keys, strict=True)]
            result = accuracy_summary(soft, categories=categories)
            result["modal_accuracy"] = 100 * sum(modal) / len(modal)
            best = [vqav2_accuracy(k["answer"], human_answers(k)) for k in keys]
            result["bayes_accuracy"] = 100 * sum(best) / len(best)
        if log_probs is not None:
            result |= likelihood_scores([log_probs[str(q.question_id)] for q in questions], keys)
        return result

    def render(self, result: dict) -> str:
        breakdowns = {"category": result["categories"]}
        text = render_scores(f"Synthetic (n={result['n']})", "accuracy", result["accuracy"], breakdowns)
        extra = [f"{name}: {result[name]:.3f}" for name in ("modal_accuracy", "bayes_accuracy", "log_likelihood",
                                                            "bayes_log_likelihood", "ece") if name in result]
        return text + ("\n\n" + "\n".join(extra) if extra else "")


def likelihood_scores(log_probs: list[dict[str, float]], keys: list[dict]) -> dict:
    """Mean log-likelihood of the answer distributions, its ceiling, and the calibration error (see the module)."""
    log_likelihood = bayes = 0.0
    bins: list[list[tuple[float, float]]] = [[] for _ in range(CALIBRATION_BINS)]
    for scores, key in zip(log_probs, keys, strict=True):
        top = max(scores.values())
        normaliser = top + math.log(sum(math.exp(s - top) for s in scores.values()))
        q = {answer: s - normaliser for answer, s in scores.items()}
        distribution = answer_distribution(key)
        if unknown := set(distribution) - set(q):
            raise DataError(f"question {key['question_id']}: answers {sorted(unknown)} are not candidates")
        log_likelihood += sum(p * q[answer] for answer, p in distribution.items())
        bayes += sum(p * math.log(p) for p in distribution.values() if p > 0)
        best = max(q, key=q.get)
        confidence = math.exp(q[best])
        people = human_answers(key)
        bins[min(int(confidence * CALIBRATION_BINS), CALIBRATION_BINS - 1)].append(
            (confidence, sum(answer == best for answer in people) / len(people)))
    n = len(keys)
    ece = sum(abs(sum(c for c, _ in group) - sum(a for _, a in group)) for group in bins) / n
    return {"log_likelihood": log_likelihood / n, "bayes_log_likelihood": bayes / n, "ece": 100 * ece}


SYNTHETIC = Synthetic()
