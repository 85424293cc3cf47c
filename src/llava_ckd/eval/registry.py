"""Every benchmark by name: what to ask (`questions`), how long to answer, how to score and show it.

Each benchmark lives in its own module (`pope.py` scores POPE, ...); this module only collects them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from llava_ckd.errors import UserError
from llava_ckd.eval.gqa import GQA
from llava_ckd.eval.mmbench import MMBENCH, MMBENCH_CN
from llava_ckd.eval.mme import MME
from llava_ckd.eval.mmmu import MMMU
from llava_ckd.eval.pope import POPE
from llava_ckd.eval.questions import EvalQuestion
from llava_ckd.eval.scienceqa import SCIENCEQA
from llava_ckd.eval.synthetic import SYNTHETIC
from llava_ckd.eval.textvqa import TEXTVQA
from llava_ckd.eval.vizwiz import VIZWIZ
from llava_ckd.eval.vqav2 import VQAV2


class Benchmark(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def max_new_tokens(self) -> int: ...

    def questions(self, data_dir: Path) -> list[EvalQuestion]: ...

    def score(self, data_dir: Path, answers: list[dict]) -> dict: ...

    def render(self, result: dict) -> str: ...


class UnknownBenchmarkError(UserError, LookupError):
    """A benchmark name this package does not score."""


BENCHMARKS: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for benchmark in (POPE, MME, SCIENCEQA, GQA, TEXTVQA, VIZWIZ, VQAV2, MMBENCH, MMBENCH_CN, MMMU, SYNTHETIC)
}


def benchmark_names() -> list[str]:
    return sorted(BENCHMARKS)


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(benchmark_names())}")
    return BENCHMARKS[name]
