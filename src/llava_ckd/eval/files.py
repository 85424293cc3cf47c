"""Reading the JSON and JSONL files that benchmarks ship, with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llava_ckd.errors import UserError


class EvalDataError(UserError, ValueError):
    """A benchmark or answer file is missing, malformed, or does not match its questions."""


def require_file(path: Path, what: str) -> Path:
    """Return `path`, or raise naming the missing file and what it is for."""
    if not path.is_file():
        raise EvalDataError(f"missing {what}: {path}")
    return path


def _invalid_utf8(path: Path, line_number: int, err: UnicodeDecodeError) -> EvalDataError:
    return EvalDataError(f"{path}:{line_number}: not valid UTF-8 ({err.reason}: byte {err.object[err.start]:#04x})")


def decode_utf8(path: Path, data: bytes, first_line: int = 1) -> str:
    """`data` (the bytes of `path` from line `first_line` on) as text; an invalid byte raises naming its line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _invalid_utf8(path, first_line + data.count(b"\n", 0, err.start), err) from err


def read_text(path: Path, what: str) -> str:
    """The whole of a UTF-8 text file; missing file or invalid byte raise naming file (and line)."""
    return decode_utf8(path, require_file(path, what).read_bytes())


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as err:
        raise EvalDataError(f"{path}: not valid JSON ({err})") from err


def iter_jsonl(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-empty line."""
    with require_file(path, what).open("rb") as f:
        for line_number, raw in enumerate(f, start=1):
            line = decode_utf8(path, raw, line_number)
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
