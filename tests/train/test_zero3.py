"""DeepSpeed ZeRO-3 on CPU (gloo, 2 processes): a distill step with a partitioned Student and a partitioned
online Teacher gives the loss and gradients of the unpartitioned step. DeepSpeed is an optional extra
(`pip install -e .[deepspeed]`; its first start compiles a small CPU communication op, about 35 s); without
it the test is skipped. Accelerate's Trainer path does not set DeepSpeed up on CPUs, so this drives
`deepspeed.initialize` directly (see zero3_distill.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_zero3_partitioned_distill_step_equals_the_unpartitioned_step(colour_dataset, tokenizer_dir, tmp_path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "result.json"
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2",
               "-m", "tests.train.zero3_distill", str(colour_dataset), str(tokenizer_dir), str(out)]
    result = subprocess.run(command, cwd=REPOSITORY, env=os.environ | {"OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(out.read_text())

    assert measured["partitioned_outside_forward"]
    assert measured["loss"] == pytest.approx(measured["expected_loss"], rel=1e-5)
    assert measured["gradient_names"]
    assert measured["largest_gradient_difference"] < 1e-6 * max(1.0, measured["largest_gradient"])
