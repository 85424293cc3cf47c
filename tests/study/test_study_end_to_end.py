"""A miniature study from the command line: every variant, paired seeds, summary and plots; killed, it resumes
without retraining what finished; rerun, it trains nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from llava_ckd.study.stats import paired
from tests.cascade.test_cascade_end_to_end import miniature_recipe as miniature_cascade_recipe

COMMAND = [sys.executable, "-m", "llava_ckd.cli", "study"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def miniature_recipe(tmp_path):
    """The miniature cascade of the cascade end-to-end test, as a study: a split KD budget over cached signals."""
    recipe = miniature_cascade_recipe(tmp_path)
    recipe["defaults"] |= {"max_steps": 4, "save_steps": 1, "logging_steps": 1}
    return recipe | {
        "output": str(tmp_path / "study"),
        "stages": [{"name": "sft", "kind": "sft"},
                   {"name": "kd", "kind": "distill", "without_kd": "sft", "signals": "cached", "top_k": 4,
                    "budget": "per-plan", "max_steps": 3, "losses": {"ce": 1.0, "response_kd": 1.0}}],
        "plans": ["none", "direct", "top-down", "bottom-up"],
        "overrides": [{"stage": "kd", "model": teacher, "set": {"without_kd": "skip"}}
                      for teacher in ("tiny-ta", "tiny-teacher")],
        "evaluation": recipe["evaluation"] | {"val": str(tmp_path / "data" / "val")},
    }


def run_study(recipe_path, *extra):
    return subprocess.run([*COMMAND, str(recipe_path), "--seeds", "2", "--teacher-sets", "2", *extra], env=ENV,
                          capture_output=True, text=True, check=True)


def manifests(root):
    return {path: json.loads(path.read_text()) for path in (root / "store").glob("*/*/*/manifest.json")}


@pytest.mark.slow
def test_miniature_study_summarises_resumes_after_a_kill_and_reruns_nothing(tmp_path):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(miniature_recipe(tmp_path)))
    root = tmp_path / "study"

    process = subprocess.Popen([*COMMAND, str(recipe_path), "--seeds", "2", "--teacher-sets", "2"], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    deadline = time.time() + 300
    while not any(m["status"] == "finished" for m in manifests(root).values()):
        assert process.poll() is None and time.time() < deadline, "the study ended before it could be killed"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = {path: m["started_at"] for path, m in manifests(root).items() if m["status"] == "finished"}

    run_study(recipe_path)
    after = manifests(root)
    assert all(m["status"] == "finished" for m in after.values())
    assert {path: after[path]["started_at"] for path in finished_before} == finished_before, "finished stages kept"

    summary = json.loads((root / "summary.json").read_text())
    rows = {row["label"]: row for row in summary["rows"]}
    assert set(rows) == {"none", "direct", "top-down", "bottom-up", "direct from tiny-ta",
                         "bottom-up, each Teacher 3 steps (paper layout)", "bottom-up, one schedule over the chain",
                         "direct from tiny-ta (Teacher set 1)"}
    equal_budget = ["none", "direct", "top-down", "bottom-up", "direct from tiny-ta",
                    "bottom-up, one schedule over the chain", "direct from tiny-ta (Teacher set 1)"]
    assert {rows[label]["student_steps"] for label in equal_budget} == {3}
    assert rows["bottom-up, each Teacher 3 steps (paper layout)"]["student_steps"] == 6
    for row in summary["rows"]:
        assert row["seeds"] == [0, 1]
        if row["label"] != "none":
            expected = paired({int(s): a for s, a in row["accuracy_per_seed"].items()},
                              {int(s): a for s, a in rows["none"]["accuracy_per_seed"].items()})
            assert row["vs_none"]["mean"] == pytest.approx(expected["mean"])
    assert [t["name"] for t in summary["teachers"]] == ["tiny-ta", "tiny-teacher", "tiny-ta"]
    assert [t["teacher_set"] for t in summary["teachers"]] == [0, 0, 1]
    assert summary["teachers"][0]["plateau"]["measured"] and summary["teachers"][0]["plateau"]["val_at_step"] == 3
    assert [p["teacher"] for p in summary["gap_curve"]] == ["tiny-ta", "tiny-teacher"]
    assert summary["gap_curve"][0]["capacity_ratio"] < summary["gap_curve"][1]["capacity_ratio"]
    assert set(summary["student"]["sft_per_seed"]) == {"0", "1"}
    # the Student after its SFT, not `none`'s continuation of it
    assert len(list((root / "store" / "stages" / "student").glob("sft-*/eval/synthetic/answers.jsonl"))) == 2
    assert (root / "gap.png").stat().st_size > 0 and (root / "plans.png").stat().st_size > 0
    assert "| bottom-up |" in (root / "summary.md").read_text()

    stamps = {path: m["started_at"] for path, m in manifests(root).items()}
    run_study(recipe_path)
    assert {path: m["started_at"] for path, m in manifests(root).items()} == stamps
