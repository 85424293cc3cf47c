"""The reference LLaVA-1.5-13B evaluation files live in `shared/` beside the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

LLAVA_BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / "llava-v1.5-13b"


@pytest.fixture(scope="session")
def llava_benchmarks() -> Path:
    if not LLAVA_BENCHMARKS.is_dir():
        pytest.fail(f"reference benchmark files not found at {LLAVA_BENCHMARKS} (clone with shared/ beside it)")
    return LLAVA_BENCHMARKS


def line_count(path: Path) -> int:
    return sum(1 for line in path.open(encoding="utf-8") if line.strip())
