"""The reference LLaVA-1.5-13B evaluation files, shipped xz-compressed in `tests/fixtures/llava-v1.5-13b/`.

The scorers read plain files from a folder, so the session fixture decompresses the whole tree once into a pytest
temporary folder (same relative layout, `.xz` dropped). See `tests/fixtures/README.md` for what the files are.
"""

from __future__ import annotations

import lzma
import shutil
from pathlib import Path

import pytest

LLAVA_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "llava-v1.5-13b"


@pytest.fixture(scope="session")
def llava_benchmarks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compressed = sorted(LLAVA_FIXTURES.rglob("*.xz"))
    if not compressed:
        pytest.fail(f"reference benchmark files not found under {LLAVA_FIXTURES}")
    root = tmp_path_factory.mktemp("llava-v1.5-13b")
    for source in compressed:
        target = root / source.relative_to(LLAVA_FIXTURES).with_suffix("")
        target.parent.mkdir(parents=True, exist_ok=True)
        with lzma.open(source) as packed, target.open("wb") as plain:
            shutil.copyfileobj(packed, plain)
    return root


def line_count(path: Path) -> int:
    return sum(1 for line in path.open(encoding="utf-8") if line.strip())
