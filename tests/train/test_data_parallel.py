"""Two data-parallel processes (torch DDP over gloo, on CPU, launched by torchrun) train a distill stage to the
same losses and weights as one process with the same global batch.

Tolerance: 1e-4 relative on every logged loss term and 1e-5 absolute on every weight after 4 AdamW steps. What
differs is only float summation order (two half-batches padded separately, gradients summed by all-reduce): the
measured differences are about 1e-7 relative on the losses, 4e-5 on the small relation term (about 1.5e-3) and
2e-7 absolute on the weights. A Student called around its DDP wrapper (no gradient all-reduce) ends 7.7e-3 away.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.distill.test_distill_stage import distill_dict

STEPS = 4
GLOBAL_BATCH = 8
LOGGED = ("loss", "ce", "response_kd", "visual_kd", "relation_kd")
BIN = Path(sys.executable).parent


def train(config: dict, folder: Path, processes: int) -> Path:
    path = folder / "stage.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [str(BIN / "llava-ckd"), "train", str(path)]
    if processes > 1:
        command = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={processes}", "--no-python", *command]
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(config["output_dir"])


def step_logs(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(colour_dataset, tokenizer_dir, tmp_path):
    def config(name: str, per_device_batch: int) -> dict:
        return distill_dict(colour_dataset, tokenizer_dir, tmp_path / name, batch_size=per_device_batch,
                            max_steps=STEPS, save_steps=STEPS)

    one = train(config("one-process", GLOBAL_BATCH), tmp_path, processes=1)
    two = train(config("two-processes", GLOBAL_BATCH // 2), tmp_path, processes=2)

    one_logs, two_logs = step_logs(one), step_logs(two)
    assert [entry["epoch"] for entry in two_logs] == [entry["epoch"] for entry in one_logs]  # 8 samples per step
    for step, (expected, got) in enumerate(zip(one_logs, two_logs, strict=True), 1):
        for name in LOGGED:
            assert got[name] == pytest.approx(expected[name], rel=1e-4), f"step {step}: {name}"
    assert one_logs[-1]["loss"] < one_logs[0]["loss"] - 0.1  # the steps moved the model

    expected, got = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-5, msg=name)
    assert json.loads((two / "final" / "metrics.json").read_text())["global_step"] == STEPS
