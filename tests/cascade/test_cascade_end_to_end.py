import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from llava_ckd.cascade import plan_cascade
from llava_ckd.data.synthetic import SyntheticSpec
from llava_ckd.demo import prepare_synthetic
from llava_ckd.train.vision import train_vision_encoder

COMMAND = [sys.executable, "-m", "llava_ckd.cli", "cascade"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")

PLAN_STAGES = {
    "none": ["student/sft"],
    "direct": ["teacher-tiny-teacher/sft", "student/sft", "direct/student/dft-from-tiny-teacher"],
    "top-down": ["teacher-tiny-teacher/sft", "teacher-tiny-ta/sft", "top-down/teacher-tiny-ta/dft-from-tiny-teacher",
                 "student/sft", "top-down/student/dft-from-tiny-ta"],
    "bottom-up": ["teacher-tiny-teacher/sft", "teacher-tiny-ta/sft", "student/sft",
                  "bottom-up/student/dft-from-tiny-ta", "bottom-up/student/dft-from-tiny-teacher"],
}


def miniature_recipe(tmp_path):
    data = tmp_path / "data"
    prepare_synthetic(data, SyntheticSpec(n_train=32, n_val=8, n_test=8, n_captions=8))
    vision = train_vision_encoder(data, tmp_path / "vision", steps=5, batch_size=8)

    def model(preset):
        return {"preset": preset, "tokenizer": str(data / "tokenizer"), "vision_init": str(vision)}

    return {
        "output": str(tmp_path / "cascade"),
        "student": model("tiny-student"),
        "teachers": [{"name": "tiny-ta", "model": model("tiny-ta")},
                     {"name": "tiny-teacher", "model": model("tiny-teacher")}],
        "defaults": {"data": {"conversations": str(data / "train" / "train.json"),
                              "images": str(data / "train" / "images"), "max_length": 128},
                     "batch_size": 4, "learning_rate": 1e-3, "max_steps": 2, "save_steps": 1000},
        "stages": [{"name": "sft", "kind": "sft"},
                   {"name": "dft", "kind": "distill", "signals": "online",
                    "losses": {"ce": 1.0, "response_kd": 1.0, "visual_kd": 0.5, "relation_kd": 0.5}}],
        "plans": list(PLAN_STAGES),
        "evaluation": {"benchmark": "synthetic", "data": str(data / "test"), "batch_size": 8},
    }


def run_command(recipe_path):
    return subprocess.run([*COMMAND, str(recipe_path)], env=ENV, capture_output=True, text=True, check=True)


@pytest.mark.slow
def test_miniature_cascade_runs_every_plan_skips_on_rerun_and_resumes_a_killed_stage(tmp_path):
    recipe = miniature_recipe(tmp_path)
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    output = tmp_path / "cascade"

    first = run_command(recipe_path)
    summary = json.loads((output / "cascade.json").read_text())
    assert {plan: entry["stages"] for plan, entry in summary["plans"].items()} == PLAN_STAGES
    run_order = [stage["name"] for stage in summary["stages"]]
    assert [line.split("] ")[1] for line in first.stdout.splitlines() if line.endswith(": running")] == [
        f"{name}: running" for name in run_order]
    for stage in summary["stages"]:
        manifest = json.loads((tmp_path / stage["directory"] / "manifest.json").read_text())
        assert manifest["status"] == "finished" and manifest["metrics"]["global_step"] == 2
        assert (tmp_path / manifest["checkpoint"] / "model.safetensors").is_file()
    takd_student = json.loads((tmp_path / summary["stages"][-3]["directory"] / "manifest.json").read_text())
    assert takd_student["name"] == "top-down/student/dft-from-tiny-ta"
    assert takd_student["inputs"]["teacher"]["name"] == "top-down/teacher-tiny-ta/dft-from-tiny-teacher"
    assert takd_student["config"]["teacher"]["model"]["path"] == takd_student["inputs"]["teacher"]["path"]
    results = (output / "results.md").read_text()
    for plan, stages in PLAN_STAGES.items():
        assert f"| {plan} | {stages[-1]} | " in results
        assert 0 <= summary["plans"][plan]["result"]["accuracy"] <= 100

    models = sorted(output.glob("stages/*/*/final/model.safetensors"))
    stamps = [model.stat().st_mtime_ns for model in models]
    second = run_command(recipe_path)
    assert second.stdout.count("finished before, skipped") == 8 and ": running" not in second.stdout
    assert [model.stat().st_mtime_ns for model in models] == stamps
    assert (output / "results.md").read_text() == results

    longer = recipe | {"plans": ["none"], "overrides": [
        {"stage": "sft", "model": "student", "set": {"max_steps": 40, "save_steps": 5}}]}
    recipe_path.write_text(yaml.safe_dump(longer))
    (stage,) = plan_cascade(recipe_path).stages
    process = subprocess.Popen([*COMMAND, str(recipe_path)], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(stage.directory.glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None and time.time() < deadline, "the stage ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not stage.output.exists()
    assert json.loads((stage.directory / "manifest.json").read_text())["status"] == "running"

    resumed = run_command(recipe_path)
    assert "[1/1] student/sft: resuming from its last checkpoint" in resumed.stdout
    assert "resuming from" in resumed.stderr and "checkpoint-" in resumed.stderr
    manifest = json.loads((stage.directory / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["metrics"]["global_step"] == 40
