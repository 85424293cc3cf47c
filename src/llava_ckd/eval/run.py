"""`llava-ckd eval`: answer a benchmark's questions with a model, write LLaVA's answer file, score it.

Answers are appended to `OUT/answers.jsonl` batch by batch; a killed run picks up after the last
answer written. The score goes to `OUT/result.json` and is printed as a table.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from llava_ckd.eval.answers import answer_record, read_answers
from llava_ckd.eval.generate import AnswerGenerator, GenerationRequest
from llava_ckd.eval.questions import EvalQuestion
from llava_ckd.eval.registry import get_benchmark
from llava_ckd.models import load_vlm


def question_key(question_id, prompt: str) -> tuple[str, str]:
    return str(question_id), prompt


def answered_so_far(answers_path: Path) -> set[tuple[str, str]]:
    """Keys of the answers already written; a line cut short by a kill is dropped."""
    if not answers_path.is_file():
        return set()
    text = answers_path.read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1]
    if complete != text:
        answers_path.write_text(complete, encoding="utf-8")
    return {question_key(a["question_id"], a.get("prompt", "")) for a in read_answers(answers_path)}


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
                out.write(json.dumps(answer_record(question, text, model_id=Path(model_path).name)) + "\n")
            out.flush()
            progress.update(len(batch))


def evaluate(model_path: Path, benchmark_name: str, data_dir: Path, out_dir: Path, batch_size: int = 16) -> dict:
    benchmark = get_benchmark(benchmark_name)
    answers_path = out_dir / "answers.jsonl"
    answer_questions(model_path, benchmark.questions(data_dir), answers_path, benchmark.max_new_tokens, batch_size)
    result = benchmark.score(data_dir, read_answers(answers_path))
    (out_dir / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    return result
