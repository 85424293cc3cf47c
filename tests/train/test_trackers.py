"""`report_to` reaches the Trainer, each tracker gets the stage's input fingerprints as run config, and changing
where a stage reports does not change the stage."""

from importlib.util import find_spec

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from llava_ckd.config import ConfigError, StageConfig, validate
from llava_ckd.fingerprint import file_sha256
from llava_ckd.train.inputs import stage_inputs
from llava_ckd.train.stage import run_stage
from llava_ckd.train.trackers import INPUTS_KEY
from tests.train.test_stage import stage_dict


def tiny_stage(colour_dataset, tokenizer_dir, output_dir, **changes):
    return StageConfig.model_validate(stage_dict(colour_dataset, tokenizer_dir, output_dir, max_steps=1,
                                                 save_steps=1, **changes))


def test_tensorboard_holds_the_stages_input_fingerprints(colour_dataset, tokenizer_dir, tmp_path):
    run_stage(tiny_stage(colour_dataset, tokenizer_dir, tmp_path / "run"))
    (events,) = (tmp_path / "run" / "runs").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent), size_guidance={"tensors": 0})
    accumulator.Reload()
    (entry,) = accumulator.Tensors(f"{INPUTS_KEY}/text_summary")
    text = entry.tensor_proto.string_val[0].decode()
    assert file_sha256(colour_dataset) in text and '"max_steps": 1' in text


def test_where_a_stage_reports_is_not_part_of_what_it_is(colour_dataset, tokenizer_dir, tmp_path):
    tensorboard = tiny_stage(colour_dataset, tokenizer_dir, tmp_path / "run")
    silent = tiny_stage(colour_dataset, tokenizer_dir, tmp_path / "run", report_to=[])
    assert stage_inputs(tensorboard) == stage_inputs(silent)
    final = run_stage(tensorboard)
    stamp = (final / "model.safetensors").stat().st_mtime_ns
    assert run_stage(silent) == final and (final / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.skipif(find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_tracker_that_is_not_installed_is_refused_naming_it(colour_dataset, tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"report_to: Value error, wandb not installed \(pip install wandb\)"):
        validate(StageConfig, stage_dict(colour_dataset, tokenizer_dir, tmp_path, report_to=["wandb"]), "stage.yaml")


@pytest.mark.skipif(find_spec("wandb") is None, reason="wandb is not installed (an optional tracker)")
def test_wandb_offline_run_config_holds_the_inputs(colour_dataset, tokenizer_dir, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_stage(tiny_stage(colour_dataset, tokenizer_dir, tmp_path / "run", report_to=["wandb"]))
    inputs = wandb.run.config[INPUTS_KEY]
    wandb.finish()
    assert inputs["data"]["conversations"] == file_sha256(colour_dataset)


@pytest.mark.skipif(find_spec("mlflow") is None, reason="mlflow is not installed (an optional tracker)")
def test_mlflow_local_store_holds_the_inputs(colour_dataset, tokenizer_dir, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this opt-in to a local file store
    run_stage(tiny_stage(colour_dataset, tokenizer_dir, tmp_path / "run", report_to=["mlflow"]))
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    run_id = run.info.run_id
    inputs = mlflow.artifacts.load_dict(f"runs:/{run_id}/{INPUTS_KEY}.json")
    assert inputs["data"]["conversations"] == file_sha256(colour_dataset)
