import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, Trainer

from llava_ckd.config import ConfigError, StageConfig, load_stage_config
from llava_ckd.train.stage import run_stage


def stage_dict(dataset, tokenizer_dir, output_dir, **overrides):
    config = {
        "kind": "sft",
        "model": {"preset": "tiny-student", "tokenizer": str(tokenizer_dir)},
        "data": {"conversations": str(dataset), "images": str(dataset.parent / "images"), "max_length": 64},
        "output_dir": str(output_dir),
        "train": ["vision", "projector", "llm"],
        "learning_rate": 3e-3,
        "batch_size": 8,
        "max_steps": 6,
        "save_steps": 3,
        "logging_steps": 2,
    }
    return config | overrides


def weights(final_dir):
    return load_file(final_dir / "model.safetensors")


def test_stage_trains_saves_a_reloadable_model_and_is_not_rerun(colour_dataset, tokenizer_dir, tmp_path):
    config = StageConfig.model_validate(stage_dict(colour_dataset, tokenizer_dir, tmp_path / "run"))
    final = run_stage(config)

    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and metrics["samples_kept"] == 64
    assert yaml.safe_load((final / "stage.yaml").read_text())["max_steps"] == 6
    assert AutoModelForImageTextToText.from_pretrained(final).config.image_seq_length == 16
    assert list((tmp_path / "run" / "runs").iterdir()), "TensorBoard logs"

    stamp = (final / "model.safetensors").stat().st_mtime_ns
    assert run_stage(config) == final
    assert (final / "model.safetensors").stat().st_mtime_ns == stamp


def test_pretrain_stage_changes_only_the_projector(colour_dataset, tokenizer_dir, tmp_path):
    first = run_stage(StageConfig.model_validate(
        stage_dict(colour_dataset, tokenizer_dir, tmp_path / "a", kind="pretrain", train=None, max_steps=1)))
    second = run_stage(StageConfig.model_validate(
        stage_dict(colour_dataset, tokenizer_dir, tmp_path / "b", kind="pretrain", train=None, max_steps=4,
                   model={"path": str(first)})))
    before, after = weights(first), weights(second)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all("multi_modal_projector." in name for name in changed)


def test_interrupted_stage_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
    colour_dataset, tokenizer_dir, tmp_path, monkeypatch
):
    reference_final = run_stage(StageConfig.model_validate(
        stage_dict(colour_dataset, tokenizer_dir, tmp_path / "reference")))
    reference = weights(reference_final)

    config = StageConfig.model_validate(stage_dict(colour_dataset, tokenizer_dir, tmp_path / "interrupted"))
    original_step = Trainer.training_step

    def crash_after_step_four(self, *args, **kwargs):
        if self.state.global_step == 4:
            raise KeyboardInterrupt
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash_after_step_four)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config)
    monkeypatch.setattr(Trainer, "training_step", original_step)
    assert sorted(p.name for p in config.output_dir.glob("checkpoint-*")) == ["checkpoint-3"]

    resumed_steps = []

    def record_step(self, *args, **kwargs):
        resumed_steps.append(self.state.global_step)
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", record_step)
    final = run_stage(config)
    assert resumed_steps == [3, 4, 5]
    resumed = weights(final)
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0)

    # train_loss is the mean over all 6 steps (the logged losses are means over steps 1-2, 3-4, 5-6), the same to
    # the last bit whether the stage resumed (from step 3, between two logs) or not
    reference_loss = json.loads((reference_final / "metrics.json").read_text())["train_loss"]
    logged = [entry["loss"] for entry in json.loads(
        (tmp_path / "reference" / "checkpoint-6" / "trainer_state.json").read_text())["log_history"] if "loss" in entry]
    assert reference_loss == pytest.approx(sum(logged) / len(logged), rel=1e-6)
    assert json.loads((final / "metrics.json").read_text())["train_loss"] == reference_loss


def test_a_checkpoint_save_cut_short_leaves_no_checkpoint_folder_and_the_rerun_resumes_from_the_one_before(
    colour_dataset, tokenizer_dir, tmp_path, monkeypatch, caplog
):
    config = StageConfig.model_validate(stage_dict(colour_dataset, tokenizer_dir, tmp_path / "run", save_steps=2))
    original_save = Trainer._save_rng_state

    def cut_short_at_step_four(self, output_dir):
        if self.state.global_step == 4:  # as a kill after the weights and the optimizer, before the RNG state
            raise KeyboardInterrupt
        original_save(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", cut_short_at_step_four)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config)
    monkeypatch.setattr(Trainer, "_save_rng_state", original_save)
    assert sorted(p.name for p in config.output_dir.glob("checkpoint*")) == ["checkpoint-2", "checkpoint.partial"]
    written = {p.name for p in (config.output_dir / "checkpoint.partial" / "checkpoint-4").iterdir()}
    assert {"model.safetensors", "optimizer.pt"} <= written and "trainer_state.json" not in written

    caplog.set_level("INFO", logger="llava_ckd")
    final = run_stage(config)
    assert f"resuming from {config.output_dir / 'checkpoint-2'}" in caplog.text
    assert sorted(p.name for p in config.output_dir.glob("checkpoint*")) == ["checkpoint-4", "checkpoint-6"]
    assert json.loads((final / "metrics.json").read_text())["global_step"] == 6


def test_config_errors_name_the_file_and_field(tmp_path, colour_dataset, tokenizer_dir):
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump(stage_dict(colour_dataset, tokenizer_dir, tmp_path / "run", lr=0.1)))
    with pytest.raises(ConfigError, match=r"stage.yaml: invalid configuration\n  lr: Extra inputs"):
        load_stage_config(path)
    path.write_text(yaml.safe_dump(stage_dict(colour_dataset, tokenizer_dir, tmp_path / "run",
                                              model={"preset": "tiny-student"})))
    with pytest.raises(ConfigError, match="model: Value error, a preset needs a tokenizer folder"):
        load_stage_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_stage_config(tmp_path / "absent.yaml")
    path.write_text(yaml.safe_dump(stage_dict(colour_dataset, tokenizer_dir, tmp_path / "run")))
    assert load_stage_config(path, ["max_steps=9", "data.max_length=32"]).data.max_length == 32


def logged_learning_rates(output_dir, checkpoint) -> list[float]:
    state = json.loads((output_dir / checkpoint / "trainer_state.json").read_text())
    return [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]


def test_a_schedule_window_runs_its_part_of_one_longer_schedule(colour_dataset, tokenizer_dir, tmp_path):
    """Steps 2-5 of a 6-step warm-up + cosine schedule, run as a stage of 4 steps with a window, take the same
    learning rates as those steps of the whole 6-step stage."""
    common = {"logging_steps": 1, "save_steps": 6, "warmup_ratio": 0.34}
    whole = tmp_path / "whole"
    run_stage(StageConfig.model_validate(stage_dict(colour_dataset, tokenizer_dir, whole, **common)))
    part = tmp_path / "part"
    run_stage(StageConfig.model_validate(stage_dict(colour_dataset, tokenizer_dir, part, max_steps=4, save_steps=4,
                                                    schedule_window={"start": 2, "total": 6},
                                                    **{k: v for k, v in common.items() if k != "save_steps"})))
    rates = logged_learning_rates(whole, "checkpoint-6")
    assert rates[1] < rates[2]  # still warming up at step 2: the window is not a schedule of its own
    assert logged_learning_rates(part, "checkpoint-4") == pytest.approx(rates[2:], rel=1e-6)


def test_a_schedule_window_must_hold_the_stage(colour_dataset, tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match="schedule_window"):
        StageConfig.model_validate(stage_dict(colour_dataset, tokenizer_dir, tmp_path, max_steps=5,
                                              schedule_window={"start": 2, "total": 6}))


def test_resume_takes_the_last_checkpoint_saved_to_the_end_and_deletes_ones_cut_short(tmp_path, caplog):
    from llava_ckd.train.stage import last_complete_checkpoint

    def checkpoint(step, state="{}", weights=True):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
        if weights:
            (folder / "model.safetensors").write_bytes(b"")
        return folder

    complete = checkpoint(20)
    checkpoint(100)                                   # lexically after 30, numerically after it too: the newest
    checkpoint(30, state=None)                       # killed before trainer_state.json
    checkpoint(100_0, state='{"global_st')          # killed while writing it
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-100"
    checkpoint(200, weights=False)                    # weights gone (a rotation cut short)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-100"
    assert not (tmp_path / "checkpoint-200").exists() and not (tmp_path / "checkpoint-1000").exists()
    assert "checkpoint-1000: its save was cut short" in caplog.text
    assert complete.exists() and (tmp_path / "checkpoint-30").exists()   # older ones are left to the Trainer
    zero3 = checkpoint(300, weights=False)             # ZeRO-3 without 16-bit weights: DeepSpeed's states alone
    (zero3 / "latest").write_text("global_step300")
    assert last_complete_checkpoint(tmp_path) == zero3


def test_the_loss_sum_starts_at_zero_and_a_checkpoint_without_one_is_named(tmp_path, caplog):
    from llava_ckd.train.trainer import LOSS_SUM_FILE, loss_sum_at

    assert float(loss_sum_at(None)) == 0.0
    (tmp_path / "checkpoint-4").mkdir()
    assert loss_sum_at(str(tmp_path / "checkpoint-4")) is None
    assert f"checkpoint-4 has no {LOSS_SUM_FILE}: train_loss will be the mean over the steps run from it" in caplog.text
    (tmp_path / "checkpoint-4" / LOSS_SUM_FILE).write_text('{"loss_sum": 0.1}')
    assert loss_sum_at(str(tmp_path / "checkpoint-4")).item() == 0.1  # float64, as JSON holds it
