"""POPE: "Is there a <object> in the image?" over COCO val2014, in three splits.

data_dir:
- `questions.jsonl`: LLaVA's `llava_pope_test.jsonl` (`category` is the split, suffix included).
- `labels_{adversarial,popular,random}.json`: POPE's `coco_pope_*.json` (JSON lines with `label`).
- `images/`: the COCO val2014 images.

Scoring (LLaVA's `eval_pope.py`): within a split, answers in question-file order pair by position
with the label file's lines. Parse: keep the text before the first `.`, delete `,`, split on spaces;
"no" if a word is exactly `No`, `no` or `not`, else "yes" (so "NO" and "" count as yes). Positive is
yes. Headline: the mean of the three F1 scores, in percent; per-split values are fractions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llava_ckd.eval.answers import answer_texts
from llava_ckd.eval.questions import EvalQuestion, read_llava_questions
from llava_ckd.eval.report import format_table
from llava_ckd.files import DataError, read_jsonl

SPLITS = ("adversarial", "popular", "random")
NO_WORDS = ("No", "no", "not")


def parse_yes(text: str) -> bool:
    """True when LLaVA's POPE parser reads `text` as "yes"."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return not any(word in NO_WORDS for word in words)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def split_metrics(predicted_yes: list[bool], labelled_yes: list[bool]) -> dict:
    pairs = list(zip(predicted_yes, labelled_yes, strict=True))
    true_pos = sum(p and t for p, t in pairs)
    false_pos = sum(p and not t for p, t in pairs)
    true_neg = sum(not p and not t for p, t in pairs)
    precision = _ratio(true_pos, true_pos + false_pos)
    recall = _ratio(true_pos, sum(labelled_yes))
    return {
        "f1": _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0,
        "accuracy": _ratio(true_pos + true_neg, len(pairs)),
        "precision": precision,
        "recall": recall,
        "yes_ratio": _ratio(sum(predicted_yes), len(pairs)),
        "n": len(pairs),
    }


@dataclass(frozen=True)
class Pope:
    name: str = "pope"
    max_new_tokens: int = 128

    def questions(self, data_dir: Path) -> list[EvalQuestion]:
        return read_llava_questions(data_dir / "questions.jsonl", data_dir / "images")

    def score(self, data_dir: Path, answers: list[dict]) -> dict:
        questions = self.questions(data_dir)
        texts = answer_texts(questions, answers)
        splits = {}
        for split in SPLITS:
            labels_path = data_dir / f"labels_{split}.json"
            labelled_yes = [record["label"] != "no" for record in read_jsonl(labels_path, "POPE label file")]
            predicted_yes = [parse_yes(t) for q, t in zip(questions, texts, strict=True) if q.category == split]
            if len(predicted_yes) != len(labelled_yes):
                raise DataError(
                    f"{labels_path}: {len(labelled_yes)} labels but {len(predicted_yes)} {split} questions"
                )
            splits[split] = split_metrics(predicted_yes, labelled_yes)
        f1_mean = 100 * sum(s["f1"] for s in splits.values()) / len(splits)
        return {"f1_mean": f1_mean, "splits": splits}

    def render(self, result: dict) -> str:
        columns = ("f1", "accuracy", "precision", "recall", "yes_ratio")
        rows = [
            (split, str(metrics["n"]), *(f"{metrics[c]:.3f}" for c in columns))
            for split, metrics in result["splits"].items()
        ]
        table = format_table(("split", "n", *columns), rows)
        return f"POPE  mean F1: {result['f1_mean']:.2f}\n\n{table}"


POPE = Pope()
