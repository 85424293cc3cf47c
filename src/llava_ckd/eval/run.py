"""`llava-ckd eval`: answer a benchmark's questions with a model, write LLaVA's answer file, score it.

Answers are appended to `OUT/answers.jsonl` batch by batch; a killed run picks up after the last
answer written. The score goes to `OUT/result.json` and is printed as a table.

Before the first answer, `OUT/fingerprint.json` records what the answers come from: the model (a local
folder: its resolved path and the name, size and mtime_ns of each file at its top level, subfolders
such as the default `eval/` output left out; otherwise the hub id), the benchmark name, and the name,
size and mtime_ns of each file at the top level of the benchmark's data folder (image folders left
out). A rerun with the same fingerprint resumes (or reuses finished answers); with another one it
refuses, naming what differs, so that one model's answers are never scored as another's. Answers
without a fingerprint (from before it existed) are not trusted either. `restart=True` (`llava-ckd eval
--restart`) deletes the answers, the result and the fingerprint and starts over.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from llava_ckd.eval.answers import answer_record, read_answers
from llava_ckd.eval.files import EvalDataError
from llava_ckd.eval.generate import AnswerGenerator, GenerationRequest
from llava_ckd.eval.questions import EvalQuestion
from llava_ckd.eval.registry import get_benchmark
from llava_ckd.fingerprint import differences, folder_files, location_fingerprint
from llava_ckd.models import load_vlm

ANSWERS_FILE = "answers.jsonl"
RESULT_FILE = "result.json"
FINGERPRINT_FILE = "fingerprint.json"
SHOWN_DIFFERENCES = 5


class EvalRunError(ValueError):
    """An evaluation asked for with settings that cannot work (e.g. a batch size of 0)."""


class StaleAnswersError(EvalDataError):
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


def evaluation_fingerprint(model_path: Path | str, benchmark_name: str, data_dir: Path) -> dict:
    data_dir = Path(data_dir)
    return {
        "model": location_fingerprint(model_path),
        "benchmark": benchmark_name,
        "data": {"path": str(data_dir.resolve()), "files": folder_files(data_dir) if data_dir.is_dir() else {}},
    }


def check_answers_folder(out_dir: Path, fingerprint: dict, restart: bool) -> None:
    """Make `out_dir` hold only answers of the evaluation `fingerprint` describes, and record it.

    With `restart`, earlier answers, result and fingerprint are deleted. Otherwise answers made under
    another fingerprint (or none) raise `StaleAnswersError`; a folder with no answer yet is taken over.
    """
    answers_path, fingerprint_path = out_dir / ANSWERS_FILE, out_dir / FINGERPRINT_FILE
    if restart:
        for name in (ANSWERS_FILE, RESULT_FILE, FINGERPRINT_FILE):
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
    partial = fingerprint_path.with_name(FINGERPRINT_FILE + ".partial")
    partial.write_text(json.dumps(fingerprint, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(fingerprint_path)


def answer_questions(model_path: Path, questions: list[EvalQuestion], answers_path: Path,
                     max_new_tokens: int, batch_size: int) -> None:
    done = answered_so_far(answers_path)
    todo = [q for q in questions if question_key(q.question_id, q.prompt) not in done]
    if not todo:
        return
    model, processor = load_vlm(model_path)
    generator = AnswerGenerator(model, processor, max_new_tokens)
    answers_path.parent.mkdir(parents=True, exist_ok=True)
    with answers_path.open("a", encoding="utf-8") as out, \
            tqdm(total=len(questions), initial=len(questions) - len(todo), desc="answering", unit="q") as progress:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            texts = generator.answer([GenerationRequest(q.prompt, q.image) for q in batch])
            for question, text in zip(batch, texts, strict=True):
                out.write(json.dumps(answer_record(question, text, model_id=str(model_path))) + "\n")
            out.flush()
            progress.update(len(batch))


def evaluate(model_path: Path, benchmark_name: str, data_dir: Path, out_dir: Path, batch_size: int = 16, *,
             restart: bool = False) -> dict:
    """Answer `benchmark_name`'s questions in `data_dir` with the model, into `out_dir`; score them.

    Resumes answers of the same model, benchmark and data; refuses (`StaleAnswersError`) answers of
    another unless `restart`, which deletes them first. Answers carry the model path as given as `model_id`.
    """
    if batch_size < 1:
        raise EvalRunError(f"batch_size must be at least 1, got {batch_size}")
    benchmark = get_benchmark(benchmark_name)
    out_dir = Path(out_dir)
    questions = benchmark.questions(data_dir)
    check_answers_folder(out_dir, evaluation_fingerprint(model_path, benchmark_name, data_dir), restart)
    answers_path = out_dir / ANSWERS_FILE
    answer_questions(model_path, questions, answers_path, benchmark.max_new_tokens, batch_size)
    result = benchmark.score(data_dir, read_answers(answers_path))
    (out_dir / RESULT_FILE).write_text(json.dumps(result, indent=2, sort_keys=True))
    return result
