"""The float-sensitive tests pass under every CPU kernel set torch ships (ATEN_CPU_CAPABILITY default, avx2, avx512,
where this CPU has it) and under 1 and 2 threads: their tolerances come from error analysis, not from one machine."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOAT_SENSITIVE = ("tests/distill", "tests/eval/test_uncertain_answers.py", "tests/families/test_cross_family.py",
                   "tests/families/test_families.py")
CPU_FLAG = {"default": None, "avx2": "avx2", "avx512": "avx512f"}


def cpu_has(flag: str | None) -> bool:
    if flag is None:
        return True
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and flag in cpuinfo.read_text().split()


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("capability", list(CPU_FLAG))
def test_float_sensitive_tests_pass_under_the_kernel_set_and_thread_count(capability, threads):
    if not cpu_has(CPU_FLAG[capability]):
        pytest.skip(f"this CPU has no {CPU_FLAG[capability]}")
    env = os.environ | {"ATEN_CPU_CAPABILITY": capability, "OMP_NUM_THREADS": str(threads)}
    chosen = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                            env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert chosen == capability.upper()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                          *FLOAT_SENSITIVE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
