"""Two data-parallel processes (torch DDP over gloo, on CPU, launched by torchrun) give what one process gives:
a distill stage with the same global batch trains to the same losses and weights, Teacher signals come out
bit-identical with the processes sharing the shards, and a cascade writes its files once.

What differs is only float summation order (two half-batches padded separately, gradients summed by all-reduce), so
the logged loss terms agree within twice the float32 bound of their reductions (tests/tolerance.py: the Teacher's
width 96, the vocabulary, the global batch's 8 x 64 positions), about 1.1e-4 relative. The relation term is
1 - cos(vec R_T, vec R_S) with cos close to 1 (the term is about 1.5e-3), so a relative bound on it amplifies the
cosine's rounding by 1/(1 - cos): it is bounded absolutely instead, by the worst-case error of a float32 reduction
over the 256 entries of one image's 16 x 16 relation matrix of unit-norm vectors, 256 x eps(float32) = 3.1e-5 (seen:
1.8e-7 on AVX-512). The weights after 4 AdamW steps agree within 1e-5 absolute: AdamW's update is lr·m/(√v + ε),
invariant to the gradient's scale, so a relative gradient error δ moves a weight by about lr·δ per step; at lr 3e-3,
δ ≈ 1e-4 and 4 steps, 1.2e-6, below 1e-5 (a Student called around its DDP wrapper, no gradient all-reduce, ends
7.7e-3 away).
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

from llava_ckd.models import build_preset
from tests.cascade.conftest import recipe_dict, write_recipe
from tests.distill.test_distill_stage import distill_dict
from tests.tolerance import float32_bound

STEPS = 4
GLOBAL_BATCH = 8
LOGGED = ("loss", "ce", "response_kd", "visual_kd")
RELATION_ATOL = 256 * torch.finfo(torch.float32).eps
WEIGHT_ATOL = 1e-5
BIN = Path(sys.executable).parent


def launch(arguments: list[str], processes: int) -> subprocess.CompletedProcess:
    command = [str(BIN / "llava-ckd"), *arguments]
    if processes > 1:
        command = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={processes}", "--no-python", *command]
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def train(config: dict, folder: Path, processes: int) -> Path:
    path = folder / "stage.yaml"
    path.write_text(yaml.safe_dump(config))
    launch(["train", str(path)], processes)
    return Path(config["output_dir"])


def step_logs(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(colour_dataset, tokenizer, tokenizer_dir, tmp_path):
    def config(name: str, per_device_batch: int) -> dict:
        return distill_dict(colour_dataset, tokenizer_dir, tmp_path / name, batch_size=per_device_batch,
                            max_steps=STEPS, save_steps=STEPS)

    one = train(config("one-process", GLOBAL_BATCH), tmp_path, processes=1)
    two = train(config("two-processes", GLOBAL_BATCH // 2), tmp_path, processes=2)

    one_logs, two_logs = step_logs(one), step_logs(two)
    loss_rtol = 2 * float32_bound(96, len(tokenizer), GLOBAL_BATCH * 64)
    assert [entry["epoch"] for entry in two_logs] == [entry["epoch"] for entry in one_logs]  # 8 samples per step
    for step, (expected, got) in enumerate(zip(one_logs, two_logs, strict=True), 1):
        for name in LOGGED:
            assert got[name] == pytest.approx(expected[name], rel=loss_rtol), f"step {step}: {name}"
        assert got["relation_kd"] == pytest.approx(expected["relation_kd"], rel=0, abs=RELATION_ATOL), f"step {step}"
    assert one_logs[-1]["loss"] < one_logs[0]["loss"] - 0.1  # the steps moved the model

    expected, got = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=WEIGHT_ATOL, msg=name)
    metrics = [json.loads((folder / "final" / "metrics.json").read_text()) for folder in (one, two)]
    assert metrics[1]["global_step"] == STEPS
    assert metrics[1]["train_loss"] == pytest.approx(metrics[0]["train_loss"], rel=loss_rtol)


@pytest.mark.slow
def test_two_processes_share_the_shards_of_teacher_signals_bit_identically(tokenizer, colour_dataset, tmp_path):
    teacher, processor = build_preset("tiny-ta", tokenizer, seed=1)
    teacher.save_pretrained(tmp_path / "teacher")
    processor.save_pretrained(tmp_path / "teacher")

    def cache(name: str, processes: int) -> Path:
        out = tmp_path / name
        launch(["cache-teacher", "--teacher", str(tmp_path / "teacher"), "--data", str(colour_dataset),
                "--images", str(colour_dataset.parent / "images"), "--out", str(out), "--top-k", "8",
                "--max-length", "64", "--samples-per-shard", "16"], processes)
        return out

    one, two = cache("one-process", 1), cache("two-processes", 2)
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest == json.loads((one / "manifest.json").read_text())
    assert len(manifest["shards"]) == 4  # 64 samples; process 0 wrote shards 0 and 2, process 1 shards 1 and 3
    for name in manifest["shards"]:
        expected, got = load_file(one / name), load_file(two / name)
        for field, tensor in expected.items():
            torch.testing.assert_close(got[field], tensor, rtol=0, atol=0, msg=f"{name}: {field}")


@pytest.mark.slow
def test_a_two_process_cascade_trains_like_one_process_and_writes_its_files_once(
    tokenizer_dir, colour_dataset, tmp_path
):
    def run(name: str, per_device_batch: int, processes: int) -> tuple[Path, str]:
        recipe = recipe_dict(tmp_path / name, tokenizer_dir, colour_dataset, plans=["direct"],
                             teachers=[{"name": "tiny-ta", "model": {"preset": "tiny-ta",
                                                                     "tokenizer": str(tokenizer_dir)}}],
                             stages=[{"name": "sft", "kind": "sft", "max_steps": 2},
                                     {"name": "dft", "kind": "distill", "signals": "cached", "top_k": 8,
                                      "max_steps": 3, "losses": {"ce": 1.0, "response_kd": 1.0}}])
        recipe["defaults"] |= {"batch_size": per_device_batch, "save_steps": 1000}
        path = write_recipe(tmp_path / f"{name}.yaml", recipe)
        output = launch(["cascade", str(path)], processes).stdout
        return Path(recipe["output"]), output

    one, _ = run("one-process", GLOBAL_BATCH, processes=1)
    two, printed = run("two-processes", GLOBAL_BATCH // 2, processes=2)

    assert printed.count("[1/4]") == 2 and printed.count("# Cascade results") == 1  # one process prints
    cascade = json.loads((two / "cascade.json").read_text())
    assert [stage["status"] for stage in cascade["stages"]] == ["finished"] * 4
    student = Path(cascade["stages"][-1]["directory"]) / "final" / "model.safetensors"
    expected = load_file(Path(json.loads((one / "cascade.json").read_text())["stages"][-1]["directory"])
                         / "final" / "model.safetensors")
    for name, tensor in load_file(student).items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=WEIGHT_ATOL, msg=name)
