"""Reading the files a user hands in (conversations, benchmarks, answers): text, JSON and JSONL, with errors that
name the file, the line and the column."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llava_ckd.errors import UserError


class DataError(UserError, ValueError):
    """A data file (training conversations, a benchmark, an answer file) that is missing, malformed, or does not
    match what it goes with."""


def require_file(path: Path, what: str) -> Path:
    """Return `path`, or raise naming the missing file and what it is for."""
    if not path.is_file():
        raise DataError(f"missing {what}: {path}")
    return path


def decode_utf8(path: Path, data: bytes, first_line: int = 1, first_byte: int = 0) -> str:
    """`data` (the bytes of `path` from line `first_line`, byte `first_byte` on) as text; an invalid byte raises
    naming its line, column and offset in the file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first_line + data.count(b"\n", 0, error.start)
        column = len(data[data.rfind(b"\n", 0, error.start) + 1 : error.start].decode("utf-8", "replace")) + 1
        raise DataError(f"{path}:{line}:{column}: not UTF-8 text (byte {first_byte + error.start} is "
                        f"0x{data[error.start]:02x}: {error.reason}); save the file as UTF-8") from None


def read_text(path: Path, what: str) -> str:
    """The whole of a UTF-8 text file."""
    return decode_utf8(path, require_file(path, what).read_bytes())


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}:{error.colno}: malformed JSON: {error.msg}") from None


def json_lines(path: Path, what: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-empty line of a JSONL file, read line by line."""
    offset = 0
    with require_file(path, what).open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            line = decode_utf8(path, raw, number, offset)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}:{error.colno}: malformed JSON: {error.msg}") from None


def iter_jsonl(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-empty line; a line holding anything but an object raises."""
    for number, record in json_lines(path, what):
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def read_jsonl(path: Path, what: str) -> list[dict]:
    return [record for _, record in iter_jsonl(path, what)]
