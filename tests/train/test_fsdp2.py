"""FSDP2 on CPU (gloo, 2 processes): a distill step with a sharded Student and a layer-sharded online Teacher
gives the loss and gradients of the unsharded step. Accelerate selects FSDP on GPUs only, so this drives
torch's `fully_shard` directly, as accelerate's FSDP2 plugin would (see fsdp2_distill.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fsdp2_sharded_distill_step_equals_the_unsharded_step(colour_dataset, tokenizer_dir, tmp_path):
    out = tmp_path / "result.json"
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2",
               "-m", "tests.train.fsdp2_distill", str(colour_dataset), str(tokenizer_dir), str(out)]
    result = subprocess.run(command, cwd=REPOSITORY, env=os.environ | {"OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(out.read_text())

    assert measured["teacher_layers_sharded"] and measured["teacher_head_whole"]
    assert measured["loss"] == pytest.approx(measured["expected_loss"], rel=1e-5)
    assert measured["gradient_names"]
    assert measured["largest_gradient_difference"] < 1e-6 * max(1.0, measured["largest_gradient"])
