"""`llava-ckd eval`: answer a benchmark's questions with a model, write LLaVA's answer file, score it.

Answers are appended to `OUT/answers.jsonl` batch by batch; a killed run picks up after the last
answer written. The score goes to `OUT/result.json` and is printed as a table.

Before the first answer, `OUT/fingerprint.json` records what the answers come from: the model (a local
folder: its resolved path and the name, size and mtime_ns of each file at its top level, subfolders
such as the default `eval/` output left out; otherwise the hub id), the benchmark name, and the name,
size and mtime_ns of each file at the top level of the benchmark's data folder (image folders left
out). With `images="blank"` or `"shuffled"` every question is asked with its image replaced (a black image of the
same size; another question's image, by a seeded derangement): the vision-use check, whose accuracy a model that
reads the image must stay clearly above. The replacement is part of the fingerprint. For a benchmark that
names candidate answers (the synthetic one), `OUT/answer_logprobs.jsonl` holds the model's log-probability
of each, from which the score adds likelihood and calibration figures.

A rerun with the same fingerprint resumes (or reuses finished answers); with another one it
refuses, naming what differs, so that one model's answers are never scored as another's. Answers
without a fingerprint (from before it existed) are not trusted either. `restart=True` (`llava-ckd eval
--restart`) deletes the answers, the result and the fingerprint and starts over.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Literal

from PIL import Image
from tqdm import tqdm

from llava_ckd.errors import UserError
from llava_ckd.eval.answers import answer_record, read_answers
from llava_ckd.eval.generate import AnswerGenerator, GenerationRequest
from llava_ckd.eval.questions import EvalQuestion
from llava_ckd.eval.registry import get_benchmark
from llava_ckd.files import DataError, read_jsonl
from llava_ckd.fingerprint import differences, folder_files, location_fingerprint
from llava_ckd.models import load_vlm
from llava_ckd.storage import write_whole

ANSWERS_FILE = "answers.jsonl"
RESULT_FILE = "result.json"
FINGERPRINT_FILE = "fingerprint.json"
LOG_PROBS_FILE = "answer_logprobs.jsonl"
BLANK_IMAGE = "blank.png"
SHOWN_DIFFERENCES = 5
VISION_MARGIN = 5.0   # points of accuracy the real images must score above blank and shuffled ones
ImageUse = Literal["real", "blank", "shuffled"]
IMAGE_USES: tuple[ImageUse, ...] = ("real", "blank", "shuffled")


class EvalRunError(UserError, ValueError):
    """An evaluation asked for with settings that cannot work (e.g. a batch size of 0)."""


class StaleAnswersError(DataError):
    """The output folder holds answers of another evaluation (another model, benchmark or data)."""


def question_key(question_id, prompt: str) -> tuple[str, str]:
    return str(question_id), prompt


def answered_so_far(answers_path: Path) -> set[tuple[str, str]]:
    """Keys of the answers already written; a line cut short by a kill is dropped."""
    if not answers_path.is_file():
        return set()
    data = answers_path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if complete != data:
        answers_path.write_bytes(complete)
    return {question_key(a["question_id"], a.get("prompt", "")) for a in read_answers(answers_path)}


def evaluation_fingerprint(model_path: Path | str, benchmark_name: str, data_dir: Path,
                           images: ImageUse = "real") -> dict:
    data_dir = Path(data_dir)
    fingerprint = {
        "model": location_fingerprint(model_path),
        "benchmark": benchmark_name,
        "data": {"path": str(data_dir.resolve()), "files": folder_files(data_dir) if data_dir.is_dir() else {}},
    }
    return fingerprint if images == "real" else fingerprint | {"images": images}


def with_images_replaced(questions: list[EvalQuestion], images: ImageUse, out_dir: Path) -> list[EvalQuestion]:
    """The questions with their images as `images` says (see the module docstring)."""
    if images == "real":
        return questions
    with_image = [q for q in questions if q.image is not None]
    if images == "blank":
        if not with_image:
            return questions
        with Image.open(with_image[0].image) as first:
            size = first.size
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(out_dir / BLANK_IMAGE)
        return [replace(q, image=out_dir / BLANK_IMAGE) if q.image is not None else q for q in questions]
    order = list(range(len(with_image)))
    random.Random(0).shuffle(order)
    moved = {order[i]: with_image[order[(i + 1) % len(order)]].image for i in range(len(order))}
    replaced = iter([replace(q, image=moved[i]) for i, q in enumerate(with_image)])
    return [next(replaced) if q.image is not None else q for q in questions]


def check_answers_folder(out_dir: Path, fingerprint: dict, restart: bool) -> None:
    """Make `out_dir` hold only answers of the evaluation `fingerprint` describes, and record it.

    With `restart`, earlier answers, result and fingerprint are deleted. Otherwise answers made under
    another fingerprint (or none) raise `StaleAnswersError`; a folder with no answer yet is taken over.
    """
    answers_path, fingerprint_path = out_dir / ANSWERS_FILE, out_dir / FINGERPRINT_FILE
    if restart:
        for name in (ANSWERS_FILE, RESULT_FILE, FINGERPRINT_FILE, LOG_PROBS_FILE):
            (out_dir / name).unlink(missing_ok=True)
    has_answers = answers_path.is_file() and b"\n" in answers_path.read_bytes()
    if has_answers:
        how = (f"pick another output folder, or start over with `llava-ckd eval --restart` (evaluate(..., "
               f"restart=True)), which deletes the answers in {out_dir}")
        if not fingerprint_path.is_file():
            raise StaleAnswersError(
                f"{answers_path} holds answers but {FINGERPRINT_FILE} is missing (written by an older version), "
                f"so they may come from another model or data; {how}")
        try:
            recorded = json.loads(fingerprint_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StaleAnswersError(f"{fingerprint_path}: unreadable ({err}); {how}") from err
        found = differences(recorded, fingerprint)
        if found:
            shown = "; ".join(found[:SHOWN_DIFFERENCES])
            more = f"; and {len(found) - SHOWN_DIFFERENCES} more" if len(found) > SHOWN_DIFFERENCES else ""
            raise StaleAnswersError(f"{answers_path} holds answers of another evaluation ({shown}{more}); {how}")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / LOG_PROBS_FILE).unlink(missing_ok=True)
    write_whole(fingerprint_path, json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")


class LazyGenerator:
    """The model's `AnswerGenerator`, loaded on first use and then kept: answering and scoring the candidates of
    one evaluation load the model once, and not at all when both are already on disk."""

    def __init__(self, model_path: Path, max_new_tokens: int):
        self.model_path, self.max_new_tokens = model_path, max_new_tokens
        self._generator: AnswerGenerator | None = None

    def __call__(self) -> AnswerGenerator:
        if self._generator is None:
            self._generator = AnswerGenerator(*load_vlm(self.model_path), self.max_new_tokens)
        return self._generator


def answer_questions(generator: LazyGenerator, questions: list[EvalQuestion], answers_path: Path,
                     batch_size: int) -> None:
    done = answered_so_far(answers_path)
    todo = [q for q in questions if question_key(q.question_id, q.prompt) not in done]
    if not todo:
        return
    answer = generator().answer   # the model loads before the answer file is opened
    answers_path.parent.mkdir(parents=True, exist_ok=True)
    with answers_path.open("a", encoding="utf-8") as out, \
            tqdm(total=len(questions), initial=len(questions) - len(todo), desc="answering", unit="q") as progress:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            texts = answer([GenerationRequest(q.prompt, q.image) for q in batch])
            for question, text in zip(batch, texts, strict=True):
                out.write(json.dumps(answer_record(question, text, model_id=str(generator.model_path))) + "\n")
            out.flush()
            progress.update(len(batch))


def candidate_log_probs(generator: LazyGenerator, questions: list[EvalQuestion], candidates: dict[str, list[str]],
                        path: Path) -> dict[str, dict[str, float]]:
    """The model's log-probability of each question's candidate answers, read from `path` or computed into it."""
    if not path.is_file():
        lines = [json.dumps({"question_id": q.question_id, "log_probs": generator().answer_log_probs(
                     GenerationRequest(q.prompt, q.image), candidates[str(q.question_id)])})
                 for q in tqdm(questions, desc="answer likelihoods", unit="q")]
        write_whole(path, "".join(line + "\n" for line in lines))
    return {str(row["question_id"]): row["log_probs"] for row in read_jsonl(path, "answer likelihood file")}


def evaluate(model_path: Path, benchmark_name: str, data_dir: Path, out_dir: Path, batch_size: int = 16, *,
             restart: bool = False, images: ImageUse = "real") -> dict:
    """Answer `benchmark_name`'s questions in `data_dir` with the model, into `out_dir`; score them.

    Resumes answers of the same model, benchmark and data; refuses (`StaleAnswersError`) answers of
    another unless `restart`, which deletes them first. Answers carry the model path as given as `model_id`.
    `images`: the real images, or the vision-use check's replacements (module docstring).
    """
    if batch_size < 1:
        raise EvalRunError(f"batch_size must be at least 1, got {batch_size}")
    benchmark = get_benchmark(benchmark_name)
    out_dir = Path(out_dir)
    check_answers_folder(out_dir, evaluation_fingerprint(model_path, benchmark_name, data_dir, images), restart)
    questions = with_images_replaced(benchmark.questions(data_dir), images, out_dir)
    answers_path = out_dir / ANSWERS_FILE
    generator = LazyGenerator(model_path, benchmark.max_new_tokens)
    answer_questions(generator, questions, answers_path, batch_size)
    candidates = benchmark.answer_candidates(data_dir) if hasattr(benchmark, "answer_candidates") else None
    if candidates is not None:
        log_probs = candidate_log_probs(generator, questions, candidates, out_dir / LOG_PROBS_FILE)
        result = benchmark.score(data_dir, read_answers(answers_path), log_probs=log_probs)
    else:
        result = benchmark.score(data_dir, read_answers(answers_path))
    (out_dir / RESULT_FILE).write_text(json.dumps(result, indent=2, sort_keys=True))
    return result


def vision_check(model_path: Path, benchmark_name: str, data_dir: Path, out_dir: Path, batch_size: int = 16, *,
                 restart: bool = False) -> dict[ImageUse, dict]:
    """The result with the real images (in `out_dir`) and with them blank and shuffled (`out_dir/<use>-images`)."""
    return {use: evaluate(model_path, benchmark_name, data_dir,
                          out_dir if use == "real" else Path(out_dir) / f"{use}-images", batch_size,
                          restart=restart, images=use) for use in IMAGE_USES}



def vision_warning(results: dict[ImageUse, dict], metric: str = "accuracy") -> str | None:
    """A warning when the real images score within `VISION_MARGIN` points of a replacement."""
    real = results["real"][metric]
    close = [f"{use} images {results[use][metric]:.1f}" for use in IMAGE_USES[1:]
             if real - results[use][metric] < VISION_MARGIN]
    if not close:
        return None
    return (f"warning: {metric} with the real images ({real:.1f}) is within {VISION_MARGIN:g} points of "
            f"{' and '.join(close)}: the model may not read the image")
