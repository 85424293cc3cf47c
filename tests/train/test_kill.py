"""A stage SIGKILLed at 22 random instants, many of them inside checkpoint saves, rerun after each kill: it ends
with the uninterrupted run's weights, bit for bit, and no run needed a file deleted by hand (scripts/kill_test.py
drives the runs and prints where each kill landed; run with `-s` to see its table)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.train.test_stage import stage_dict

SCRIPT = Path(__file__).parents[2] / "scripts" / "kill_test.py"


@pytest.mark.slow
def test_a_stage_killed_at_random_instants_and_rerun_ends_with_the_uninterrupted_weights(
    colour_dataset, tokenizer_dir, tmp_path
):
    config = tmp_path / "stage.yaml"
    config.write_text(yaml.safe_dump(stage_dict(colour_dataset, tokenizer_dir, tmp_path / "unused",
                                                max_steps=80, save_steps=2, logging_steps=3)))
    work, report_file = tmp_path / "kill-test", tmp_path / "report.json"
    finished = subprocess.run([sys.executable, str(SCRIPT), str(config), "--work", str(work), "--kills", "22",
                               "--seed", "0", "--json", str(report_file)], capture_output=True, text=True)
    print(finished.stdout, finished.stderr)
    report = json.loads(report_file.read_text())
    runs = report["runs"]
    killed = [run for run in runs if run["killed_at_s"] is not None]

    assert finished.returncode == 0
    assert len(killed) == 22 and runs[-1]["killed_at_s"] is None and len(runs) == 23
    assert all(run["exit_code"] == -9 for run in killed) and runs[-1]["exit_code"] == 0
    assert not killed[0]["complete_left"], "the first kill comes before the first checkpoint"
    assert sum(run["inside_save"] not in (None, "final") for run in killed) >= 5
    assert any(run["partial_left"][:1] == [f"checkpoint.partial/{run['inside_save']}"] for run in killed)
    assert killed[-1]["inside_save"] == "final" and killed[-1]["partial_left"] == ["final.partial"]
    assert not any(run["incomplete_left"] for run in killed), "every checkpoint-N folder is whole"
    assert report["global_step"] == 80
    reference, result = (load_file(work / name / "final" / "model.safetensors") for name in ("reference", "killed"))
    assert reference.keys() == result.keys()
    assert all(torch.equal(result[name], tensor) for name, tensor in reference.items())
    assert report["train_loss_equal"]
