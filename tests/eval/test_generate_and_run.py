import json
from pathlib import Path

import pytest
import torch

from llava_ckd.eval.generate import AnswerGenerator, GenerationRequest
from llava_ckd.eval.run import FINGERPRINT_FILE, EvalRunError, StaleAnswersError, evaluate, evaluation_fingerprint
from llava_ckd.models import build_preset
from tests.conftest import COLOURS, write_dataset


@pytest.fixture
def synthetic_folder(tmp_path):
    """A benchmark folder in the synthetic layout: questions, answer key, images."""
    records = [{"id": str(i), "image": f"{i}.png", "conversations": []} for i in range(12)]
    write_dataset(tmp_path, records)
    names = list(COLOURS)
    questions = [{"question_id": i, "image": f"{i}.png", "category": "colour",
                  "text": "What colour is the image?\nAnswer the question using a single word or phrase."}
                 for i in range(12)]
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    key = [{"question_id": i, "answer": names[i % 4], "category": "colour"} for i in range(12)]
    (tmp_path / "answer_key.jsonl").write_text("".join(json.dumps(k) + "\n" for k in key))
    return tmp_path


@pytest.fixture
def saved_model(tokenizer, tmp_path):
    model, processor = build_preset("tiny-ta", tokenizer, seed=3)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_batched_generation_gives_the_answers_of_one_at_a_time(tokenizer, synthetic_folder):
    model, processor = build_preset("tiny-ta", tokenizer, seed=1)
    model = model.double()  # random weights give near-ties; fp64 keeps padding noise far below them
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.model.language_model.parameters():  # large weights: answers depend on the input
            parameter.normal_(0, 0.3)
    generator = AnswerGenerator(model, processor, max_new_tokens=6)
    requests = [GenerationRequest("What colour is the image?" + " Really?" * (i % 3),
                                  synthetic_folder / "images" / f"{i}.png") for i in range(12)]
    requests.append(GenerationRequest("How many objects are there?"))
    one_by_one = [generator.answer_ids([request])[0] for request in requests]
    batched = generator.answer_ids(requests[:7]) + generator.answer_ids(requests[7:])
    assert batched == one_by_one
    assert len({tuple(ids) for ids in one_by_one}) > 1, "answers should depend on the input"


def test_eval_writes_llava_answers_scores_them_and_resumes_after_a_kill(saved_model, synthetic_folder, tmp_path):
    out = tmp_path / "eval"
    result = evaluate(saved_model, "synthetic", synthetic_folder, out, batch_size=5)
    lines = (out / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 12
    first = json.loads(lines[0])
    assert set(first) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert first["prompt"].startswith("What colour is the image?")
    assert first["model_id"] == str(saved_model)  # the path as given, not just the folder's name
    assert json.loads((out / "result.json").read_text()) == result
    assert result["n"] == 12 and set(result["categories"]) == {"colour"}

    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / FINGERPRINT_FILE).write_text((out / FINGERPRINT_FILE).read_text())  # written before any answer
    (killed / "answers.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])  # cut mid-line
    texts_before = [json.loads(line)["text"] for line in lines]
    resumed = evaluate(saved_model, "synthetic", synthetic_folder, killed, batch_size=5)
    resumed_lines = (killed / "answers.jsonl").read_text().splitlines()
    assert [json.loads(line)["question_id"] for line in resumed_lines] == list(range(12))
    assert [json.loads(line)["text"] for line in resumed_lines] == texts_before
    assert resumed == result


def test_generation_runs_in_the_model_dtype(tokenizer, synthetic_folder):
    model, processor = build_preset("tiny-student", tokenizer)
    generator = AnswerGenerator(model.double(), processor, max_new_tokens=2)
    inputs = generator._inputs([GenerationRequest("What colour?", synthetic_folder / "images" / "0.png")])
    assert inputs["pixel_values"].dtype == torch.float64
    assert inputs["input_ids"].shape[0] == 1


class LoadCounter:
    """Stands in for `load_vlm`: a model that answers with its folder's name; counts the loads."""

    def __init__(self):
        self.loaded = []

    def __call__(self, model_path):
        self.loaded.append(str(model_path))
        return model_path, None


class NamingGenerator:
    def __init__(self, model, processor, max_new_tokens):
        self.model = model

    def answer(self, requests):
        return [Path(self.model).parent.name for _ in requests]


@pytest.fixture
def fake_models(tmp_path, monkeypatch):
    """Two model folders both called `final` (as two runs' final models are), and a counting loader."""
    loads = LoadCounter()
    monkeypatch.setattr("llava_ckd.eval.run.load_vlm", loads)
    monkeypatch.setattr("llava_ckd.eval.run.AnswerGenerator", NamingGenerator)
    models = []
    for run in ("run-a", "run-b"):
        final = tmp_path / run / "final"
        final.mkdir(parents=True)
        (final / "config.json").write_text(json.dumps({"run": run}))
        (final / "model.safetensors").write_bytes(b"weights of " + run.encode())
        models.append(final)
    return models, loads


def _texts(out):
    return [json.loads(line)["text"] for line in (out / "answers.jsonl").read_text().splitlines()]


def test_eval_into_a_folder_of_another_models_answers_refuses_and_restart_starts_over(
        fake_models, synthetic_folder, tmp_path):
    (model_a, model_b), loads = fake_models
    out = tmp_path / "eval"
    evaluate(model_a, "synthetic", synthetic_folder, out, batch_size=5)
    assert json.loads((out / FINGERPRINT_FILE).read_text())["model"]["path"] == str(model_a.resolve())
    assert {json.loads(line)["model_id"] for line in (out / "answers.jsonl").read_text().splitlines()} == {
        str(model_a)}
    assert _texts(out) == ["run-a"] * 12

    with pytest.raises(StaleAnswersError) as refused:
        evaluate(model_b, "synthetic", synthetic_folder, out, batch_size=5)
    message = str(refused.value)
    assert f"model.path: {model_a.resolve()} then, {model_b.resolve()} now" in message
    assert "--restart" in message
    assert loads.loaded == [str(model_a)], "model B is never loaded, model A's score never returned"
    assert _texts(out) == ["run-a"] * 12

    result = evaluate(model_b, "synthetic", synthetic_folder, out, batch_size=5, restart=True)
    assert _texts(out) == ["run-b"] * 12
    assert loads.loaded == [str(model_a), str(model_b)]
    assert json.loads((out / "result.json").read_text()) == result
    assert json.loads((out / FINGERPRINT_FILE).read_text())["model"]["path"] == str(model_b.resolve())


def test_eval_refuses_when_the_model_files_or_the_data_changed(fake_models, synthetic_folder, tmp_path):
    (model_a, _), loads = fake_models
    out = tmp_path / "eval"
    evaluate(model_a, "synthetic", synthetic_folder, out, batch_size=5)
    evaluate(model_a, "synthetic", synthetic_folder, out, batch_size=5)  # same fingerprint: reused
    assert loads.loaded == [str(model_a)]

    (model_a / "model.safetensors").write_bytes(b"retrained weights")
    changed = r"model\.files\.model\.safetensors: 16 bytes modified .+ then, 17 bytes modified .+ now"
    with pytest.raises(StaleAnswersError, match=changed):
        evaluate(model_a, "synthetic", synthetic_folder, out, batch_size=5)
    evaluate(model_a, "synthetic", synthetic_folder, out, batch_size=5, restart=True)

    with (synthetic_folder / "answer_key.jsonl").open("a") as key:
        key.write("\n")
    with pytest.raises(StaleAnswersError, match=r"data\.files\.answer_key\.jsonl: \d+ bytes"):
        evaluate(model_a, "synthetic", synthetic_folder, out, batch_size=5)
    with pytest.raises(StaleAnswersError, match=r"benchmark: synthetic then, pope now"):
        evaluate(model_a, "pope", synthetic_folder, out, batch_size=5)


def test_fingerprint_is_written_before_the_first_answer_and_a_killed_run_resumes(
        fake_models, synthetic_folder, tmp_path, monkeypatch):
    (model_a, model_b), loads = fake_models
    out = tmp_path / "eval"

    def killed(model_path):
        assert (out / FINGERPRINT_FILE).is_file() and not (out / "answers.jsonl").exists()
        raise KeyboardInterrupt

    monkeypatch.setattr("llava_ckd.eval.run.load_vlm", killed)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model_a, "synthetic", synthetic_folder, out, batch_size=5)
    monkeypatch.setattr("llava_ckd.eval.run.load_vlm", loads)
    # no answer written yet: the folder holds nothing of model A to protect, so model B may use it
    evaluate(model_b, "synthetic", synthetic_folder, out, batch_size=5)
    assert _texts(out) == ["run-b"] * 12


def test_answers_without_a_fingerprint_are_not_trusted(fake_models, synthetic_folder, tmp_path):
    (model_a, _), loads = fake_models
    out = tmp_path / "eval"
    out.mkdir()
    (out / "answers.jsonl").write_text(json.dumps({"question_id": 0, "text": "red", "model_id": "final"}) + "\n")
    with pytest.raises(StaleAnswersError, match=rf"{FINGERPRINT_FILE} is missing"):
        evaluate(model_a, "synthetic", synthetic_folder, out, batch_size=5)
    assert loads.loaded == []


def test_fingerprint_of_a_hub_id_and_of_the_data_files(synthetic_folder):
    fingerprint = evaluation_fingerprint("llava-hf/llava-1.5-7b-hf", "synthetic", synthetic_folder)
    assert fingerprint["model"] == {"name": "llava-hf/llava-1.5-7b-hf"}
    assert fingerprint["benchmark"] == "synthetic"
    files = fingerprint["data"]["files"]
    assert set(files) == {"answer_key.jsonl", "questions.jsonl", "train.json"}  # images/ is a folder: left out
    stat = (synthetic_folder / "questions.jsonl").stat()
    assert files["questions.jsonl"] == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def test_evaluate_refuses_a_batch_size_below_one(synthetic_folder, tmp_path):
    with pytest.raises(EvalRunError, match="batch_size must be at least 1, got 0"):
        evaluate(tmp_path / "model", "synthetic", synthetic_folder, tmp_path / "eval", batch_size=0)
