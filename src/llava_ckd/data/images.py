"""Whether the images a conversation file names can be read: each decoded in full once (a file cut short after its
header passes a header check), on several threads for a large file (Pillow decodes without holding the GIL)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

IMAGES_PER_THREAD = 64
"""Fewer images than this are checked on the calling thread alone."""


class ImageCheck(NamedTuple):
    size: tuple[int, int] | None
    """Width and height, when the image decodes."""
    problem: str = ""
    detail: str = ""


def check_image(path: Path) -> ImageCheck:
    if not path.is_file():
        return ImageCheck(None, "image not found", str(path))
    try:
        with Image.open(path) as image:
            image.load()
            return ImageCheck(image.size)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        return ImageCheck(None, "unreadable image", f"{path}: {error}")


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_images(paths: list[Path], threads: int | None = None) -> dict[Path, ImageCheck]:
    """Each image's check; on `threads` (default: one per CPU, as many as the images keep busy)."""
    if threads is None:
        threads = min(available_cpus(), len(paths) // IMAGES_PER_THREAD)
    if threads <= 1:
        return {path: check_image(path) for path in paths}
    with ThreadPoolExecutor(threads) as pool:
        return dict(zip(paths, pool.map(check_image, paths), strict=True))
