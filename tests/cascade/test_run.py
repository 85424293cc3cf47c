import copy
import json
import shutil

import pytest

import llava_ckd.cascade.run
from llava_ckd.cascade import describe, run_cascade
from llava_ckd.cli import main
from llava_ckd.train.inputs import StageInputsChanged
from tests.cascade.conftest import TEMPLATE, recipe_dict, write_recipe

SCORES = {"accuracy": 50.0, "categories": {"colour": 60.0, "count": 40.0}, "n": 10}


@pytest.fixture
def fake_evaluation(monkeypatch):
    evaluated = []

    def evaluate(model_path, benchmark, data_dir, out_dir, batch_size=16):
        evaluated.append(model_path)
        return SCORES | {"accuracy": 10.0 * len(evaluated)}

    monkeypatch.setattr("llava_ckd.cascade.results.evaluate", evaluate)
    return evaluated


def quiet(message):
    pass


def test_manifests_record_each_stage_and_the_cascade(make_cascade, fake_training, fake_evaluation, tmp_path):
    cascade = make_cascade(evaluation={"benchmark": "synthetic", "data": str(tmp_path)})
    results = run_cascade(cascade, echo=quiet)

    assert len(fake_training) == 11 and len(fake_evaluation) == 4
    by_name = {cascade.name(node): node for node in cascade.stages}
    node = by_name["bottom-up/student/dft-from-tiny-teacher"]
    manifest = json.loads((node.directory / "manifest.json").read_text())
    upstream = by_name["bottom-up/student/dft-from-tiny-ta"]
    assert manifest["name"] == "bottom-up/student/dft-from-tiny-teacher" and manifest["plans"] == ["bottom-up"]
    assert manifest["hash"] == node.hash and node.directory.name.endswith(node.hash[:10])
    assert manifest["status"] == "finished" and manifest["wall_seconds"] >= 0
    assert manifest["teacher"] == "teacher-tiny-teacher/sft"
    assert manifest["inputs"] == {
        "model": {"name": "bottom-up/student/dft-from-tiny-ta", "hash": upstream.hash, "path": str(upstream.output)},
        "teacher": {"name": "teacher-tiny-teacher/sft", "hash": by_name["teacher-tiny-teacher/sft"].hash,
                    "path": str(by_name["teacher-tiny-teacher/sft"].output)}}
    assert manifest["config"]["model"]["path"] == str(upstream.output) and manifest["config"]["kind"] == "distill"
    assert manifest["checkpoint"] == str(node.output) and manifest["metrics"] == {"global_step": 2}
    assert set(manifest["external_files"]) == {"data.conversations", "data.images"}
    first = json.loads((by_name["student/pretrain"].directory / "manifest.json").read_text())
    assert set(first["external_files"]) == {"data.conversations", "data.images", "model.tokenizer"}

    summary = json.loads((cascade.recipe.output / "cascade.json").read_text())
    assert summary["plans"]["top-down"]["student"] == "top-down/student/dft-from-tiny-ta"
    assert summary["plans"]["none"]["stages"] == ["student/pretrain", "student/sft"]
    assert summary["plans"]["direct"]["result"]["accuracy"] == 20.0
    assert [stage["status"] for stage in summary["stages"]] == ["finished"] * 11
    assert [entry["name"] for entry in summary["chain"]] == ["tiny-ta", "tiny-teacher"]

    table = results.read_text()
    assert "| plan | Student | accuracy | colour | count | Student stages (s) | all stages (s) |" in table
    assert "| bottom-up | bottom-up/student/dft-from-tiny-teacher | 40.0 | 60.0 | 40.0 |" in table


def test_a_second_run_trains_nothing(make_cascade, fake_training):
    cascade = make_cascade()
    run_cascade(cascade, echo=quiet)
    assert len(fake_training) == 11
    messages = []
    run_cascade(make_cascade(), echo=messages.append)
    assert len(fake_training) == 11
    assert messages[0] == "[1/11] teacher-tiny-teacher/pretrain: finished before, skipped"
    assert all(message.endswith("finished before, skipped") for message in messages)


def test_a_changed_stage_reruns_with_everything_built_on_it(make_cascade, fake_training):
    run_cascade(make_cascade(), echo=quiet)
    fake_training.clear()
    cascade = make_cascade(overrides=[{"stage": "sft", "model": "tiny-ta", "set": {"max_steps": 5}}])
    run_cascade(cascade, echo=quiet)
    retrained = [cascade.name(node) for node in cascade.stages if node.directory in fake_training]
    assert retrained == ["teacher-tiny-ta/sft", "top-down/teacher-tiny-ta/dft-from-tiny-teacher",
                         "top-down/student/dft-from-tiny-ta", "bottom-up/student/dft-from-tiny-ta",
                         "bottom-up/student/dft-from-tiny-teacher"]


def test_changed_data_reruns_the_stages_that_read_it(make_cascade, fake_training, colour_dataset, tmp_path):
    captions = tmp_path / "captions.json"
    captions.write_text(colour_dataset.read_text())
    stages = copy.deepcopy(TEMPLATE)
    stages[0]["data"] = {"conversations": str(captions)}
    run_cascade(make_cascade(plans=["none"], stages=stages), echo=quiet)
    fake_training.clear()

    records = json.loads(colour_dataset.read_text())
    colour_dataset.write_text(json.dumps(records[:-1]))
    cascade = make_cascade(plans=["none"], stages=stages)
    run_cascade(cascade, echo=quiet)
    assert fake_training == [cascade.stages[1].directory]
    assert cascade.name(cascade.stages[1]) == "student/sft"


def test_an_interrupted_stage_runs_again_and_the_rest_is_skipped(make_cascade, fake_training):
    cascade = make_cascade(plans=["none"])
    run_cascade(cascade, echo=quiet)
    sft = cascade.stages[1]
    manifest = json.loads((sft.directory / "manifest.json").read_text())
    (sft.directory / "manifest.json").write_text(json.dumps(manifest | {"status": "running"}))
    shutil.rmtree(sft.output)
    (sft.directory / "checkpoint-2").mkdir()   # cut short by the kill: no trainer_state.json
    assert describe(cascade).splitlines()[-5:-3] == [
        "1  student/pretrain  -        none   done", "2  student/sft       -        none   todo"]
    checkpoint = sft.directory / "checkpoint-1"   # saved to the end
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"")
    assert describe(cascade).splitlines()[-5:-3] == [
        "1  student/pretrain  -        none   done", "2  student/sft       -        none   resume"]
    fake_training.clear()

    messages = []
    run_cascade(cascade, echo=messages.append)
    assert messages[1] == "[2/2] student/sft: resuming from its last checkpoint"
    assert fake_training == [sft.directory]


def test_cached_signals_of_a_ready_teacher_feed_a_distill_stage(make_cascade, ready_teacher):
    cascade = make_cascade(plans=["direct"], teachers=[{"name": "big", "model": {"path": str(ready_teacher[0])}}],
                           stages=[{"name": "dft", "kind": "distill", "signals": "cached", "top_k": 4, "max_steps": 1}])
    names = ["teacher-big/signals-train", "direct/student/dft-from-big"]
    assert [cascade.name(node) for node in cascade.stages] == names
    run_cascade(cascade, echo=quiet)

    signals, stage = cascade.stages
    cache = json.loads((signals.output / "manifest.json").read_text())
    assert cache["top_k"] == 4 and len(cache["sample_ids"]) == 64
    assert json.loads((stage.output / "metrics.json").read_text())["global_step"] == 1
    assert json.loads((signals.directory / "manifest.json").read_text())["status"] == "finished"
    messages = []
    run_cascade(cascade, echo=messages.append)
    assert messages == [f"[{number}/2] {name}: finished before, skipped" for number, name in enumerate(names, 1)]


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, tokenizer_dir, colour_dataset, fake_training, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", recipe_dict(tmp_path, tokenizer_dir, colour_dataset))
    main(["cascade", str(recipe), "--dry-run"])
    out = capsys.readouterr().out
    assert fake_training == [] and not (tmp_path / "out").exists()
    lines = out.splitlines()
    assert lines[1].startswith("Teachers, smallest first: tiny-ta (") and "< tiny-teacher (" in lines[1]
    assert lines[3].split() == ["#", "stage", "Teacher", "plans", "status"]
    assert lines[4].split() == ["1", "teacher-tiny-teacher/pretrain", "-", "direct,", "top-down,", "bottom-up", "todo"]
    assert lines[14].split() == ["11", "bottom-up/student/dft-from-tiny-teacher", "teacher-tiny-teacher/sft",
                                 "bottom-up", "todo"]
    assert lines[-4:] == ["  none: 6 7", "  direct: 1 2 6 7 8", "  top-down: 1 2 3 4 5 6 7 9",
                          "  bottom-up: 1 2 3 4 6 7 10 11"]


def test_the_command_reports_recipe_errors_without_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match="error: .*config file not found"):
        main(["cascade", str(tmp_path / "absent.yaml")])


def test_a_failed_stage_is_marked_failed_with_its_error(make_cascade, fake_training, monkeypatch):
    cascade = make_cascade(plans=["none"])
    fake = llava_ckd.cascade.run.run_stage

    def failing(config, callbacks=(), restart=False):
        if config.kind == "sft":
            raise ValueError("the sft data went missing")
        return fake(config, callbacks, restart)

    monkeypatch.setattr("llava_ckd.cascade.run.run_stage", failing)
    with pytest.raises(ValueError, match="went missing"):
        run_cascade(cascade, echo=quiet)
    sft = cascade.stages[1]
    manifest = json.loads((sft.directory / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == "ValueError: the sft data went missing"
    summary = json.loads((cascade.recipe.output / "cascade.json").read_text())
    assert [stage["status"] for stage in summary["stages"]] == ["finished", "failed"]


def test_a_stage_folder_holding_other_work_is_stale_until_restarted(make_cascade, fake_training):
    cascade = make_cascade(plans=["none"])
    run_cascade(cascade, echo=quiet)
    sft = cascade.stages[1]
    inputs = json.loads((sft.output / "inputs.json").read_text())
    (sft.output / "inputs.json").write_text(json.dumps(inputs | {"config": {"learning_rate": 0.5}}))
    (sft.directory / "manifest.json").unlink()
    assert describe(cascade).splitlines()[-4] == "2  student/sft       -        none   stale"
    with pytest.raises(StageInputsChanged, match="config.learning_rate: 0.5 then"):
        run_cascade(cascade, echo=quiet)
    run_cascade(cascade, echo=quiet, restart=True)
    assert describe(cascade).splitlines()[-4] == "2  student/sft       -        none   done"


def test_a_replaced_image_gives_the_stages_and_signals_reading_it_new_hashes(make_cascade, colour_dataset):
    stages = copy.deepcopy(TEMPLATE)
    stages[2]["signals"] = "cached"
    before = make_cascade(plans=["direct"], stages=stages)
    image = colour_dataset.parent / "images" / "3.png"
    image.write_bytes(image.read_bytes())
    after = make_cascade(plans=["direct"], stages=stages)
    assert any(node.job.__class__.__name__ == "SignalsJob" for node in before.stages)
    assert not {node.hash for node in before.stages} & {node.hash for node in after.stages}
