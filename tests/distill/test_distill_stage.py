import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback

from llava_ckd.cli import main
from llava_ckd.config import ConfigError, StageConfig, load_stage_config
from llava_ckd.distill.cache import CacheError
from llava_ckd.distill.terms import term_named
from llava_ckd.models import build_preset, train_tokenizer
from llava_ckd.train.stage import run_stage
from tests.conftest import CORPUS


def distill_dict(dataset, tokenizer_dir, output_dir, **overrides):
    config = {
        "kind": "distill",
        "model": {"preset": "tiny-student", "tokenizer": str(tokenizer_dir)},
        "teacher": {"kind": "online", "model": {"preset": "tiny-ta", "tokenizer": str(tokenizer_dir)}},
        "losses": {"ce": 1.0, "response_kd": 1.0, "visual_kd": 0.5, "relation_kd": 1.0},
        "divergence": {"name": "forward_kl", "temperature": 2.0},
        "kd_chunk_size": 32,
        "data": {"conversations": str(dataset), "images": str(dataset.parent / "images"), "max_length": 64},
        "output_dir": str(output_dir),
        "train": ["projector", "llm"],
        "learning_rate": 3e-3,
        "batch_size": 4,
        "max_steps": 3,
        "save_steps": 2,
        "logging_steps": 1,
    }
    return config | overrides


def config_error(tmp_path, config: dict) -> str:
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as error:
        load_stage_config(path)
    return str(error.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"teacher": None}, "teacher: a distill stage needs a teacher"),
        ({"teacher": {"kind": "remote", "path": "x"}}, "teacher: Input tag 'remote' found using 'kind' does not match"),
        ({"teacher": {"kind": "online"}}, "teacher.online.model: Field required"),
        (
            {"teacher": {"kind": "cached", "path": "cache"}, "losses": {"visual_kd": 1.0}},
            "losses: visual_kd reads the Teacher's hidden states",
        ),
        (
            {"teacher": {"kind": "cached", "path": "cache"}, "losses": {}, "divergence": {"name": "jsd"}},
            "divergence: a cached teacher holds top-k probabilities at temperature 1",
        ),
        ({"losses": {"ce": -1.0}}, "losses.ce: Input should be greater than or equal to 0"),
        ({"losses": {"ce": 0, "response_kd": 0}}, "losses: Value error, every loss weight is 0"),
        ({"losses": {"kd": 1.0}}, "losses.kd: Extra inputs are not permitted"),
        ({"losses": [{"term": "kd"}]}, "losses.0: Input tag 'kd' found using 'term' does not match any of the "
                                       "expected tags: 'ce', 'response_kd', 'visual_kd', 'relation_kd'"),
        ({"losses": [{"term": "ce", "weight": 0}]}, "losses.0.ce.weight: Input should be greater than 0"),
        ({"losses": [{"term": "ce"}, {"term": "ce", "weight": 2}]},
         "losses: Value error, ce: a term may be listed once"),
        ({"losses": []}, "losses: Value error, no loss term: nothing to train on"),
        ({"losses": [{"term": "relation_kd", "divergence": {"name": "jsd"}}]},
         "losses.0.relation_kd.divergence: Extra inputs are not permitted"),
        (
            {"teacher": {"kind": "cached", "path": "cache"},
             "losses": [{"term": "response_kd", "divergence": {"name": "reverse_kl"}}]},
            "divergence: a cached teacher holds top-k probabilities at temperature 1",
        ),
        ({"divergence": {"name": "kl"}}, "divergence.name: Input should be 'forward_kl'"),
        ({"kd_chunk_size": 0}, "kd_chunk_size: Input should be greater than or equal to 1"),
        ({"kind": "sft"}, "teacher, losses, divergence, kd_chunk_size: only a distill stage takes these fields"),
    ],
)
def test_config_errors_name_the_field(tmp_path, colour_dataset, tokenizer_dir, change, message):
    config = distill_dict(colour_dataset, tokenizer_dir, tmp_path / "run")
    if change.get("teacher", "") is None:
        del config["teacher"]
        change = {}
    assert message in config_error(tmp_path, config | change)


def test_sft_and_pretrain_configs_resolve_as_before(colour_dataset, tokenizer_dir, tmp_path):
    sft = distill_dict(colour_dataset, tokenizer_dir, tmp_path / "run", kind="sft")
    for field in ("teacher", "losses", "divergence", "kd_chunk_size"):
        del sft[field]
    resolved = StageConfig.model_validate(sft).resolved()
    assert not {"teacher", "losses", "divergence", "kd_chunk_size"} & resolved.keys()
    distill = StageConfig.model_validate(distill_dict(colour_dataset, tokenizer_dir, tmp_path / "run")).resolved()
    assert distill["teacher"]["model"]["preset"] == "tiny-ta" and distill["divergence"]["temperature"] == 2.0


def test_teacher_with_another_tokenizer_is_refused_naming_both(colour_dataset, tokenizer_dir, tmp_path):
    other = tmp_path / "other-tokenizer"
    other_corpus = [*CORPUS, "a corpus with other words merges other tokens"] * 20
    train_tokenizer(other_corpus, vocab_size=320).save_pretrained(other)
    config = distill_dict(
        colour_dataset,
        tokenizer_dir,
        tmp_path / "run",
        teacher={"kind": "online", "model": {"preset": "tiny-ta", "tokenizer": str(other)}},
    )
    with pytest.raises(ValueError, match=rf"Student tokenizer '{tokenizer_dir}'.*Teacher tokenizer '{other}'"):
        run_stage(StageConfig.model_validate(config))


class LogCapture(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def test_distill_stage_logs_its_terms_saves_final_and_resumes_from_a_checkpoint(
    colour_dataset, tokenizer_dir, tmp_path, monkeypatch
):
    capture = LogCapture()
    reference = run_stage(
        StageConfig.model_validate(distill_dict(colour_dataset, tokenizer_dir, tmp_path / "reference")),
        callbacks=[capture],
    )
    step_logs = [log for log in capture.logs if "loss" in log]
    assert len(step_logs) == 3
    assert all({"ce", "response_kd", "visual_kd", "relation_kd"} <= log.keys() for log in step_logs)
    assert json.loads((reference / "metrics.json").read_text())["global_step"] == 3
    assert yaml.safe_load((reference / "stage.yaml").read_text())["teacher"]["kind"] == "online"
    assert list((tmp_path / "reference" / "runs").iterdir()), "TensorBoard logs"

    config = StageConfig.model_validate(distill_dict(colour_dataset, tokenizer_dir, tmp_path / "interrupted"))
    original_step = Trainer.training_step

    def crash_in_step_three(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash_in_step_three)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config)
    monkeypatch.setattr(Trainer, "training_step", original_step)
    assert [p.name for p in config.output_dir.glob("checkpoint-*")] == ["checkpoint-2"]

    final = run_stage(config)
    assert json.loads((final / "metrics.json").read_text())["global_step"] == 3
    expected, resumed = load_file(reference / "model.safetensors"), load_file(final / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)


def test_cache_teacher_command_feeds_a_cached_distill_stage(colour_dataset, tokenizer_dir, tokenizer, tmp_path):
    teacher, processor = build_preset("tiny-ta", tokenizer, seed=1)
    teacher.save_pretrained(tmp_path / "teacher")
    processor.save_pretrained(tmp_path / "teacher")
    images = colour_dataset.parent / "images"
    main(
        [
            "cache-teacher",
            "--teacher",
            str(tmp_path / "teacher"),
            "--data",
            str(colour_dataset),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "cache"),
            "--top-k",
            "8",
            "--max-length",
            "64",
        ]
    )
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["top_k"] == 8

    cached = {
        "teacher": {"kind": "cached", "path": str(tmp_path / "cache")},
        "losses": {"ce": 1.0, "response_kd": 1.0},
        "divergence": {"name": "forward_kl"},
        "max_steps": 2,
    }
    final = run_stage(
        StageConfig.model_validate(distill_dict(colour_dataset, tokenizer_dir, tmp_path / "cached", **cached))
    )
    assert json.loads((final / "metrics.json").read_text())["global_step"] == 2

    shorter = distill_dict(colour_dataset, tokenizer_dir, tmp_path / "stale", **cached)
    shorter["data"] = shorter["data"] | {"max_length": 60}
    with pytest.raises(CacheError, match="max_length: cached with 64, this stage uses 60"):
        run_stage(StageConfig.model_validate(shorter))


def test_the_mapping_form_reads_as_the_list_without_its_zero_weights(tmp_path, colour_dataset, tokenizer_dir):
    config = distill_dict(colour_dataset, tokenizer_dir, tmp_path / "run")
    mapping = StageConfig.model_validate(config | {"losses": {"response_kd": 2.0, "relation_kd": 0.5}})
    listed = StageConfig.model_validate(config | {"losses": [
        {"term": "ce", "weight": 1.0}, {"term": "response_kd", "weight": 2.0}, {"term": "relation_kd", "weight": 0.5}]})

    assert [(term.name, term.weight) for term in mapping.losses] == [("ce", 1.0), ("response_kd", 2.0),
                                                                      ("relation_kd", 0.5)]
    assert mapping.resolved() == listed.resolved()


def test_example_distill_config_is_valid():
    config = load_stage_config(Path(__file__).parents[2] / "configs" / "synthetic" / "distill.yaml")
    assert config.kind == "distill" and config.teacher.kind == "online"
    assert term_named(config.losses, "relation_kd").weight == 1.0


def test_activation_checkpointing_trains_to_the_same_weights(colour_dataset, tokenizer_dir, tmp_path):
    finals = [run_stage(StageConfig.model_validate(distill_dict(colour_dataset, tokenizer_dir, tmp_path / str(flag),
                                                                activation_checkpointing=flag, max_steps=2)))
              for flag in (False, True)]
    expected, got = (load_file(final / "model.safetensors") for final in finals)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)  # the same ops, recomputed
    assert yaml.safe_load((finals[1] / "stage.yaml").read_text())["activation_checkpointing"] is True
