"""Files for the sets scored elsewhere: the EvalAI servers (VQAv2 test-dev, VizWiz test), GQA's own
`eval.py`, and the OpenCompass MMBench server (TSV; LLaVA uploads the same table as xlsx)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

from llava_ckd.eval.gqa import GQA
from llava_ckd.eval.mmbench import MMBENCH, MMBENCH_CN, MMBench
from llava_ckd.eval.registry import UnknownBenchmarkError
from llava_ckd.eval.vizwiz import VIZWIZ
from llava_ckd.eval.vqav2 import VQAV2


def _write_json(out: Path, entries: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(entries), encoding="utf-8")


def _vqav2(data_dir: Path, answers: list[dict], out: Path) -> str:
    entries = VQAV2.submission(data_dir, answers)
    _write_json(out, entries)
    answered = len({str(a["question_id"]) for a in answers} & {str(e["question_id"]) for e in entries})
    return f"{len(entries)} test2015 questions, {answered} answered, the other {len(entries) - answered} as \"\""


def _vizwiz(data_dir: Path, answers: list[dict], out: Path) -> str:
    entries = VIZWIZ.submission(data_dir, answers)
    _write_json(out, entries)
    return f"{len(entries)} answers"


def _gqa(data_dir: Path, answers: list[dict], out: Path) -> str:
    entries = GQA.predictions(data_dir, answers)
    _write_json(out, entries)
    return f"{len(entries)} predictions"


def _mmbench(benchmark: MMBench) -> Callable[[Path, list[dict], Path], str]:
    def write(data_dir: Path, answers: list[dict], out: Path) -> str:
        header, rows = benchmark.submission_table(data_dir, answers)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(header)
            writer.writerows(rows)
        return f"{len(rows)} rows"

    return write


CONVERTERS: dict[str, Callable[[Path, list[dict], Path], str]] = {
    "vqav2": _vqav2,
    "vizwiz": _vizwiz,
    "gqa": _gqa,
    "mmbench": _mmbench(MMBENCH),
    "mmbench-cn": _mmbench(MMBENCH_CN),
}


def write_submission(name: str, data_dir: Path, answers: list[dict], out: Path) -> str:
    """Write benchmark `name`'s submission file to `out`; return a one-line summary of what it holds."""
    if name not in CONVERTERS:
        raise UnknownBenchmarkError(f"no converter for {name!r}; converters: {', '.join(sorted(CONVERTERS))}")
    return f"{out}: " + CONVERTERS[name](data_dir, answers, out)
