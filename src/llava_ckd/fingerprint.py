"""Fingerprints of what an output was made from, and the differences between two of them.

A fingerprint is plain JSON. A file's content is its sha256; a local folder is its resolved path and the
name, size and mtime_ns of each file at its top level (subfolders left out); a name that is no local path
(a hub id) stands for itself; the images a conversation file names are a digest of their names, sizes
and mtimes (an image missing counts too). `differences` names every part that differs, so that an output
made from other inputs is refused with what changed, never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from pathlib import Path


def file_sha256(path: Path) -> str:
    stat = Path(path).stat()
    return _sha256(Path(path).resolve(), stat.st_size, stat.st_mtime_ns)


@cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def file_stat(path: Path) -> dict[str, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def folder_files(folder: Path) -> dict[str, dict[str, int]]:
    """Name -> {size, mtime_ns} of each file directly in `folder` (links followed, subfolders left out)."""
    return {entry.name: file_stat(entry.path) for entry in sorted(os.scandir(folder), key=lambda e: e.name)
            if entry.is_file()}


def location_fingerprint(location: str | Path) -> dict:
    """A local folder by resolved path and files, a local file by path and size/mtime; else the name itself."""
    path = Path(location)
    if path.is_dir():
        return {"path": str(path.resolve()), "files": folder_files(path)}
    if path.is_file():
        return {"path": str(path.resolve()), "file": file_stat(path)}
    return {"name": str(location)}


_images_seen: dict | None = None


@contextmanager
def images_read_once() -> Iterator[None]:
    """Within the block, each (names, folder) pair's images are read once: for the many stages of one expansion of a
    recipe, which all fingerprint the same data at the same instant. Outside it, every call reads the files again,
    so a stage that runs later sees an image changed since."""
    global _images_seen
    outer, _images_seen = _images_seen, {} if _images_seen is None else _images_seen
    try:
        yield
    finally:
        _images_seen = outer


def images_fingerprint(names: tuple[str, ...], folder: Path) -> dict:
    """Images `names` in `folder`: how many, and a digest of each one's name, size and mtime (missing ones too)."""
    folder = Path(folder).resolve()
    if _images_seen is not None and (names, folder) in _images_seen:
        return _images_seen[names, folder]
    digest = hashlib.sha256()
    for name in names:
        digest.update(json.dumps([name, file_stat(folder / name)]).encode())
    fingerprint = {"folder": str(folder), "images": len(names), "digest": digest.hexdigest()}
    if _images_seen is not None:
        _images_seen[names, folder] = fingerprint
    return fingerprint


def _describe(value) -> str:
    if value is None:
        return "absent"
    if isinstance(value, dict) and value.keys() == {"size", "mtime_ns"}:
        modified = datetime.fromtimestamp(value["mtime_ns"] / 1e9).isoformat(sep=" ", timespec="microseconds")
        return f"{value['size']} bytes modified {modified}"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:12]}"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def differences(recorded, current, where: str = "") -> list[str]:
    """`where: X then, Y now` for every leaf of two fingerprints that differs (dotted paths name the leaves)."""
    if recorded == current:
        return []
    is_stat = isinstance(current, dict) and current.keys() == {"size", "mtime_ns"}
    if isinstance(recorded, dict) and isinstance(current, dict) and not is_stat:
        found = []
        for key in sorted(recorded.keys() | current.keys(), key=str):
            found += differences(recorded.get(key), current.get(key), f"{where}.{key}" if where else str(key))
        return found
    return [f"{where or 'fingerprint'}: {_describe(recorded)} then, {_describe(current)} now"]
