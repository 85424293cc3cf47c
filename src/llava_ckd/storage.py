"""Files written whole or not at all: content goes into a sibling `<name>.partial` and is renamed over the file
once complete, so a process killed at any instant leaves either the old file or the new one, never half of one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def whole_file(path: Path, suffix: str = ".partial") -> Iterator[Path]:
    """The path to write `path`'s content into; it becomes `path` when the block ends without an error.
    `suffix`: the staging file's ending (one per process where several may write the same file at once)."""
    partial = path.with_name(path.name + suffix)
    yield partial
    partial.replace(path)


def write_whole(path: Path, text: str, suffix: str = ".partial") -> None:
    with whole_file(path, suffix) as partial:
        partial.write_text(text, encoding="utf-8")
