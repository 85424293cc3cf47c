"""Reading the JSON and JSONL files that benchmarks ship, with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class EvalDataError(ValueError):
    """A benchmark or answer file is missing, malformed, or does not match its questions."""


def require_file(path: Path, what: str) -> Path:
    """Return `path`, or raise naming the missing file and what it is for."""
    if not path.is_file():
        raise EvalDataError(f"missing {what}: {path}")
    return path


def read_json(path: Path, what: str) -> Any:
    with require_file(path, what).open(encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise EvalDataError(f"{path}: not valid JSON ({err})") from err


def iter_jsonl(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-empty line."""
    with require_file(path, what).open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise EvalDataError(f"{path}:{line_number}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise EvalDataError(f"{path}:{line_number}: expected a JSON object")
            yield line_number, record


def read_jsonl(path: Path, what: str) -> list[dict]:
    return [record for _, record in iter_jsonl(path, what)]
