"""A stage's folder only ever holds work made from the stage's inputs: resumes and reuses with the same ones,
refuses other ones naming what differs, and starts over when asked to."""

import json
import shutil

import pytest
import torch
from transformers import Trainer

from llava_ckd.cli import main
from llava_ckd.config import StageConfig
from llava_ckd.train.inputs import INPUTS_FILE, StageInputsChanged
from llava_ckd.train.stage import run_stage
from tests.train.test_stage import stage_dict, weights


def config_of(dataset, tokenizer_dir, folder, **changes) -> StageConfig:
    return StageConfig.model_validate(stage_dict(dataset, tokenizer_dir, folder, **changes))


def interrupt_after_step(monkeypatch, step):
    original = Trainer.training_step

    def crash(self, *args, **kwargs):
        if self.state.global_step == step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash)
    return lambda: monkeypatch.setattr(Trainer, "training_step", original)


def test_a_killed_stage_rerun_with_other_settings_and_data_is_refused_then_restarted(
        colour_dataset, tokenizer_dir, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    restore = interrupt_after_step(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config_of(colour_dataset, tokenizer_dir, folder))
    restore()
    assert (folder / "checkpoint-3").is_dir()

    other_data = tmp_path / "other.json"
    other_data.write_text(json.dumps(json.loads(colour_dataset.read_text())[:40]))
    changed = config_of(other_data, tokenizer_dir, folder, learning_rate=1e-3, max_steps=5)
    with pytest.raises(StageInputsChanged) as refused:
        run_stage(changed)
    message = str(refused.value)
    assert f"{folder} holds a stage made from other inputs" in message
    assert "config.learning_rate: 0.003 then, 0.001 now" in message
    assert "config.max_steps: 6 then, 5 now" in message
    assert "config.data.conversations:" in message and "data.conversations: sha256" in message
    assert "--restart" in message
    assert (folder / "checkpoint-3").is_dir(), "nothing deleted without --restart"

    final = run_stage(changed, restart=True)
    assert json.loads((final / "metrics.json").read_text())["global_step"] == 5
    fresh = weights(run_stage(config_of(other_data, tokenizer_dir, tmp_path / "fresh", learning_rate=1e-3,
                                        max_steps=5)))
    for name, tensor in weights(final).items():
        torch.testing.assert_close(tensor, fresh[name], rtol=0, atol=0)


def test_a_finished_stage_whose_data_or_images_changed_is_not_reported_finished(
        colour_dataset, tokenizer_dir, tmp_path):
    config = config_of(colour_dataset, tokenizer_dir, tmp_path / "run", max_steps=2)
    final = run_stage(config)
    assert json.loads((final / INPUTS_FILE).read_text())["data"]["images"]["images"] == 64

    image = colour_dataset.parent / "images" / "5.png"
    image.write_bytes(image.read_bytes())  # rewritten: another mtime
    with pytest.raises(StageInputsChanged, match=r"data\.images\.digest: sha256 \w+ then, sha256 \w+ now"):
        run_stage(config)

    colour_dataset.write_text(colour_dataset.read_text().replace('"blue"', '"navy"'))
    with pytest.raises(StageInputsChanged, match=r"data\.conversations: sha256 \w+ then, sha256 \w+ now"):
        run_stage(config)


def test_work_without_a_record_of_its_inputs_is_not_trusted(colour_dataset, tokenizer_dir, tmp_path):
    config = config_of(colour_dataset, tokenizer_dir, tmp_path / "run", max_steps=2)
    final = run_stage(config)
    (final / INPUTS_FILE).unlink()  # as a stage written before inputs were recorded
    with pytest.raises(StageInputsChanged, match=f"no readable {INPUTS_FILE}"):
        run_stage(config)
    shutil.rmtree(final)
    (tmp_path / "run" / "checkpoint-2").mkdir(exist_ok=True)
    (tmp_path / "run" / INPUTS_FILE).write_text("{cut short")
    with pytest.raises(StageInputsChanged, match=f"no readable {INPUTS_FILE}"):
        run_stage(config)


def test_train_command_refuses_in_one_line_and_restarts_with_the_flag(
        colour_dataset, tokenizer_dir, tmp_path, capsys):
    import yaml

    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump(stage_dict(colour_dataset, tokenizer_dir, tmp_path / "run", max_steps=2)))
    main(["train", str(path)])
    with pytest.raises(SystemExit) as refused:
        main(["train", str(path), "--set", "learning_rate=0.01"])
    assert str(refused.value).startswith(f"error: {tmp_path / 'run'} holds a stage made from other inputs")
    main(["train", str(path), "--set", "learning_rate=0.01", "--restart"])
    recorded = json.loads((tmp_path / "run" / "final" / INPUTS_FILE).read_text())
    assert recorded["config"]["learning_rate"] == 0.01


def test_a_diverging_stage_stops_without_a_final_model(colour_dataset, tokenizer_dir, tmp_path, monkeypatch):
    from llava_ckd.train.trainer import LossNotFinite, StageTrainer

    original = StageTrainer.compute_loss

    def poisoned(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        return loss * float("inf") if self.state.global_step >= 2 else loss

    monkeypatch.setattr(StageTrainer, "compute_loss", poisoned)
    config = config_of(colour_dataset, tokenizer_dir, tmp_path / "run")
    with pytest.raises(LossNotFinite, match=r"loss terms {.ce.: (nan|inf)} at step 4; stopped without saving"):
        run_stage(config)
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize(("change", "named"), [
    ({"final_logit_softcapping": 30.0}, "final_logit_softcapping=30.0"),
    ({"logit_scale": 0.5}, "logit_scale=0.5"),
    ("bias", "a bias in its LM head"),
])
def test_a_model_whose_logits_are_not_its_plain_head_is_refused(
        colour_dataset, tokenizer_dir, tokenizer, tmp_path, change, named):
    from llava_ckd.distill.heads import UnsupportedHead, check_plain_head
    from llava_ckd.models import build_preset

    model, processor = build_preset("tiny-student", tokenizer)
    if change == "bias":
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(model.lm_head.out_features))
        model.config.text_config.update({"lm_head_bias": True})
    else:
        model.config.text_config.update(change)
    with pytest.raises(UnsupportedHead, match=rf"Student .*\({named}\), which the fused LM-head losses assume"):
        check_plain_head(model, "Student")
    if change != "bias":  # the stage refuses it before training, when loaded from a saved folder
        model.save_pretrained(tmp_path / "capped")
        processor.save_pretrained(tmp_path / "capped")
        with pytest.raises(UnsupportedHead, match=named):
            run_stage(config_of(colour_dataset, tokenizer_dir, tmp_path / "run",
                                model={"path": str(tmp_path / "capped")}))
