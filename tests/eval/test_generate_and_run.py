import json

import pytest
import torch

from llava_ckd.eval.generate import AnswerGenerator, GenerationRequest
from llava_ckd.eval.run import evaluate
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
    assert json.loads((out / "result.json").read_text()) == result
    assert result["n"] == 12 and set(result["categories"]) == {"colour"}

    killed = tmp_path / "killed"
    killed.mkdir()
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
