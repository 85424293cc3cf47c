"""Every command ends a user error with one `error: ...` line (exit status 1, no traceback); --debug re-raises."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llava_ckd.cli import main
from llava_ckd.config import ConfigError, StageConfig
from llava_ckd.eval.answers import write_answers
from llava_ckd.models import build_preset


def error_of(argv: list[str]) -> str:
    """The message `main(argv)` exits with; it must be a one-line-first `error:` string, not an exception."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    message = exit_.value.code
    assert isinstance(message, str) and message.startswith("error: "), message
    return message


def stage(tmp_path: Path, dataset: Path, tokenizer_dir: Path, **changes) -> Path:
    config = {
        "kind": "sft",
        "model": {"preset": "tiny-student", "tokenizer": str(tokenizer_dir)},
        "data": {"conversations": str(dataset), "images": str(dataset.parent / "images"), "max_length": 64},
        "output_dir": str(tmp_path / "run"),
        "max_steps": 1,
    } | changes
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def saved_teacher(tokenizer, tmp_path) -> Path:
    model, processor = build_preset("tiny-ta", tokenizer, seed=1)
    model.save_pretrained(tmp_path / "teacher")
    processor.save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def test_train_missing_config_file(tmp_path):
    assert error_of(["train", str(tmp_path / "absent.yaml")]) == f"error: config file not found: {tmp_path}/absent.yaml"


def test_train_invalid_numbers_are_refused_at_load_naming_each_field(tmp_path, colour_dataset, tokenizer_dir):
    path = stage(tmp_path, colour_dataset, tokenizer_dir, learning_rate=-1e-3, batch_size=0, max_steps=-5)
    assert error_of(["train", str(path)]) == (
        f"error: {path}: invalid configuration\n"
        "  learning_rate: Input should be greater than 0\n"
        "  batch_size: Input should be greater than or equal to 1\n"
        "  max_steps: Input should be greater than or equal to 1")
    assert not (tmp_path / "run").exists()


def test_train_malformed_conversation_file(tmp_path, colour_dataset, tokenizer_dir):
    colour_dataset.write_text('[{"id": "a",, }]')
    message = error_of(["train", str(stage(tmp_path, colour_dataset, tokenizer_dir))])
    assert message.startswith(f"error: {colour_dataset}:1:13: malformed JSON: "
                              "Expecting property name enclosed in double quotes")


def test_train_latin1_conversation_file_names_file_line_and_byte(tmp_path, colour_dataset, tokenizer_dir):
    records = json.loads(colour_dataset.read_text())
    records[1]["conversations"][1]["value"] = "grün"
    colour_dataset.write_bytes(json.dumps(records, ensure_ascii=False, indent=1).encode("latin-1"))
    message = error_of(["train", str(stage(tmp_path, colour_dataset, tokenizer_dir))])
    offset = colour_dataset.read_bytes().index(b"\xfc")
    assert message.startswith(f"error: {colour_dataset}:")
    assert f"not UTF-8 text (byte {offset} is 0xfc: invalid start byte)" in message


def test_train_missing_image_folder(tmp_path, colour_dataset, tokenizer_dir):
    path = stage(tmp_path, colour_dataset, tokenizer_dir,
                 data={"conversations": str(colour_dataset), "images": str(tmp_path / "no-images")})
    assert error_of(["train", str(path)]) == (
        f"error: image folder not found: {tmp_path}/no-images (the images of {colour_dataset})")


def test_train_missing_model_folder(tmp_path, colour_dataset, tokenizer_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = stage(tmp_path, colour_dataset, tokenizer_dir, model={"path": "./no/such/dir"})
    assert error_of(["train", str(path)]) == "error: model folder not found: ./no/such/dir"


def test_debug_flag_shows_the_exception_itself(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        main(["--debug", "train", str(tmp_path / "absent.yaml")])


def test_the_process_prints_one_error_line_and_exits_1(tmp_path, colour_dataset, tokenizer_dir):
    path = stage(tmp_path, colour_dataset, tokenizer_dir, batch_size=0)
    done = subprocess.run([sys.executable, "-m", "llava_ckd.cli", "train", str(path)], capture_output=True,
                          text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.endswith(f"error: {path}: invalid configuration\n"
                                "  batch_size: Input should be greater than or equal to 1\n")


@pytest.fixture
def synthetic_questions(tmp_path) -> Path:
    folder = tmp_path / "bench"
    write_answers(folder / "questions.jsonl",
                  [{"question_id": "q1", "image": "1.png", "text": "What colour?", "category": "colour"}])
    write_answers(folder / "answer_key.jsonl", [{"question_id": "q1", "answer": "red", "category": "colour"}])
    return folder


def test_eval_missing_model_folder(tmp_path, synthetic_questions, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert error_of(["eval", "--model", "./no/such/dir", "--benchmark", "synthetic", "--data",
                     str(synthetic_questions), "--out", str(tmp_path / "out")]) == (
        "error: model folder not found: ./no/such/dir")


def test_eval_missing_benchmark_folder(tmp_path, saved_teacher):
    message = error_of(["eval", "--model", str(saved_teacher), "--benchmark", "synthetic", "--data",
                        str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    assert message.startswith("error: missing ") and str(tmp_path / "nothing") in message


def test_eval_unknown_benchmark(tmp_path, saved_teacher):
    assert error_of(["eval", "--model", str(saved_teacher), "--benchmark", "imagenet", "--data", str(tmp_path)]
                    ).startswith("error: unknown benchmark 'imagenet'; known: ")


def cache_teacher(teacher, data: Path, images: Path, out: Path) -> list[str]:
    return ["cache-teacher", "--teacher", str(teacher), "--data", str(data), "--images", str(images),
            "--out", str(out), "--top-k", "4", "--max-length", "64"]


def test_cache_teacher_missing_model_folder(tmp_path, colour_dataset, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = cache_teacher("./no/teacher/here", colour_dataset, colour_dataset.parent / "images", tmp_path / "cache")
    assert error_of(argv) == "error: model folder not found: ./no/teacher/here"


def test_cache_teacher_model_folder_without_config(tmp_path, colour_dataset):
    (tmp_path / "empty").mkdir()
    argv = cache_teacher(tmp_path / "empty", colour_dataset, colour_dataset.parent / "images", tmp_path / "cache")
    assert error_of(argv).startswith(f"error: model folder {tmp_path}/empty has no config.json")


def test_cache_teacher_truncated_weights_name_the_file(tmp_path, colour_dataset, saved_teacher):
    weights = saved_teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    message = error_of(cache_teacher(saved_teacher, colour_dataset, colour_dataset.parent / "images",
                                     tmp_path / "cache"))
    assert message.startswith(f"error: model weights unreadable (truncated or corrupt safetensors): {weights}: ")


def test_cache_teacher_data_errors(tmp_path, colour_dataset, saved_teacher):
    images = colour_dataset.parent / "images"
    assert error_of(cache_teacher(saved_teacher, tmp_path / "absent.json", images, tmp_path / "cache")) == (
        f"error: data file not found: {tmp_path}/absent.json")
    assert error_of(cache_teacher(saved_teacher, colour_dataset, tmp_path / "no-images", tmp_path / "cache")) == (
        f"error: image folder not found: {tmp_path}/no-images")
    colour_dataset.write_text("[{")
    assert error_of(cache_teacher(saved_teacher, colour_dataset, images, tmp_path / "cache")).startswith(
        f"error: {colour_dataset}:1:3: malformed JSON")


def test_cascade_and_study_missing_recipe(tmp_path):
    for command in ("cascade", "study"):
        assert error_of([command, str(tmp_path / "absent.yaml")]) == (
            f"error: config file not found: {tmp_path}/absent.yaml")


def test_train_vision_missing_data(tmp_path):
    assert error_of(["train-vision", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == (
        f"error: No such file or directory: {tmp_path}/none/train/scenes.jsonl")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("learning_rate", 0, "learning_rate: Input should be greater than 0"),
    ("grad_accum", 0, "grad_accum: Input should be greater than or equal to 1"),
    ("epochs", 0, "epochs: Input should be greater than 0"),
    ("max_steps", 0, "max_steps: Input should be greater than or equal to 1"),
    ("warmup_ratio", 1.0, "warmup_ratio: Input should be less than 1"),
    ("warmup_ratio", -0.1, "warmup_ratio: Input should be greater than or equal to 0"),
    ("weight_decay", -0.01, "weight_decay: Input should be greater than or equal to 0"),
    ("save_steps", 0, "save_steps: Input should be greater than or equal to 1"),
    ("save_total_limit", 0, "save_total_limit: Input should be greater than or equal to 1"),
    ("logging_steps", 0, "logging_steps: Input should be greater than or equal to 1"),
    ("dataloader_workers", -1, "dataloader_workers: Input should be greater than or equal to 0"),
    ("seed", -1, "seed: Input should be greater than or equal to 0"),
])
def test_stage_numbers_out_of_range_are_refused(tmp_path, colour_dataset, tokenizer_dir, field, value, message):
    path = stage(tmp_path, colour_dataset, tokenizer_dir, **{field: value})
    assert error_of(["train", str(path)]).endswith(f": invalid configuration\n  {message}")


def test_stage_numbers_at_their_bounds_are_accepted(tmp_path, colour_dataset, tokenizer_dir):
    config = yaml.safe_load(stage(tmp_path, colour_dataset, tokenizer_dir).read_text()) | {
        "max_steps": None, "warmup_ratio": 0.0, "weight_decay": 0.0, "seed": 0, "dataloader_workers": 0,
        "save_total_limit": 1, "batch_size": 1, "grad_accum": 1}
    assert StageConfig.model_validate(config).max_steps is None


def test_every_exception_the_package_defines_is_a_user_error_but_its_control_flow_signal():
    import importlib
    import inspect
    import pkgutil

    import llava_ckd
    from llava_ckd.errors import UserError

    defined = {}
    for module_info in pkgutil.walk_packages(llava_ckd.__path__, "llava_ckd."):
        module = importlib.import_module(module_info.name)
        defined |= {name: value for name, value in vars(module).items()
                    if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == module.__name__}
    assert "ConfigError" in defined and "DataError" in defined
    assert sorted(name for name, error in defined.items() if not issubclass(error, UserError)) == ["SkipSample"]


def test_make_data_refuses_a_spec_in_one_line(tmp_path):
    assert error_of(["make-data", "--out", str(tmp_path / "data"), "--blend", "2"]) == (
        "error: blend is a share of the objects, in [0, 1], got 2.0")
    assert not (tmp_path / "data").exists()
