"""Scoring answers with real uncertainty: VQA soft accuracy against 10 draws, modal accuracy, the Bayes ceiling,
the likelihood of the answer distribution and calibration; the model's candidate log-probabilities; the
vision-use check."""

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava_ckd.data.conversations import ConversationEncoder
from llava_ckd.data.synthetic import SyntheticSpec, write_benchmark
from llava_ckd.eval.answers import answer_record
from llava_ckd.eval.generate import AnswerGenerator, GenerationRequest
from llava_ckd.eval.questions import EvalQuestion
from llava_ckd.eval.run import LOG_PROBS_FILE, evaluate, vision_check, vision_warning, with_images_replaced
from llava_ckd.eval.synthetic import SYNTHETIC, likelihood_scores
from llava_ckd.eval.vqa_normalize import vqav2_accuracy
from llava_ckd.files import read_jsonl
from llava_ckd.models import build_preset, load_vlm
from tests.conftest import write_dataset


def key(answers: list[str], distribution: dict[str, float], qid: int = 0) -> dict:
    mode = max(distribution, key=distribution.get)
    return {"question_id": qid, "answer": mode, "answers": answers, "distribution": distribution, "category": "colour"}


def test_likelihood_of_the_true_distribution_is_the_ceiling_and_a_worse_one_scores_below():
    keys = [key(["blue"] * 7 + ["purple"] * 3, {"blue": 0.7, "purple": 0.3}),
            key(["red"] * 10, {"red": 1.0}, qid=1)]
    exact = [{"blue": math.log(0.7), "purple": math.log(0.3), "red": -50.0},
             {"red": 0.0, "blue": -60.0, "purple": -60.0}]
    scores = likelihood_scores(exact, keys)
    assert scores["log_likelihood"] == pytest.approx(scores["bayes_log_likelihood"], abs=1e-12)
    assert scores["bayes_log_likelihood"] == pytest.approx((0.7 * math.log(0.7) + 0.3 * math.log(0.3)) / 2)
    # unnormalised scores are renormalised over the candidates: adding a constant changes nothing
    shifted = [{a: s - 3.0 for a, s in row.items()} for row in exact]
    assert likelihood_scores(shifted, keys) == pytest.approx(scores)
    overconfident = [{"blue": 0.0, "purple": -20.0, "red": -20.0}, exact[1]]
    assert likelihood_scores(overconfident, keys)["log_likelihood"] < scores["log_likelihood"] - 1


def test_calibration_error_by_hand():
    """Two questions: confidence 0.7 where 7 of 10 agree (calibrated), confidence 0.9 where 5 of 10 agree.
    Bins of width 0.1: |0.7 - 0.7| and |0.9 - 0.5|, weighted 1/2 each: ECE = 20 points."""
    keys = [key(["blue"] * 7 + ["purple"] * 3, {"blue": 0.7, "purple": 0.3}),
            key(["red"] * 5 + ["yellow"] * 5, {"red": 0.5, "yellow": 0.5}, qid=1)]
    log_probs = [{"blue": math.log(0.7), "purple": math.log(0.3)}, {"red": math.log(0.9), "yellow": math.log(0.1)}]
    assert likelihood_scores(log_probs, keys)["ece"] == pytest.approx(20.0, abs=1e-9)


@pytest.fixture(scope="module")
def blended(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("blended")
    write_benchmark(out, SyntheticSpec(n_train=2, n_val=2, n_test=120, n_captions=1, max_objects=3, blend=0.6,
                                       forms=("colour_of_shape", "count_colour")))
    return out


def test_soft_accuracy_of_the_modal_answers_is_the_ceiling(blended: Path):
    test = blended / "test"
    keys = {k["question_id"]: k for k in read_jsonl(test / "answer_key.jsonl", "key")}
    questions = SYNTHETIC.questions(test)
    modal = SYNTHETIC.score(test, [answer_record(q, keys[q.question_id]["answer"], "m") for q in questions])
    assert modal["modal_accuracy"] == 100.0
    assert modal["accuracy"] == pytest.approx(modal["bayes_accuracy"])
    expected = 100 * sum(vqav2_accuracy(k["answer"], k["answers"]) for k in keys.values()) / len(keys)
    assert modal["bayes_accuracy"] == pytest.approx(expected)
    assert modal["bayes_accuracy"] < 100.0  # some questions' annotators disagree with the mode
    # answering a 30% answer: soft accuracy counts it as it counts matching annotators, modal accuracy does not
    minority = [answer_record(q, min(keys[q.question_id]["distribution"], key=keys[q.question_id]["distribution"].get),
                              "m") for q in questions]
    scored = SYNTHETIC.score(test, minority)
    assert scored["modal_accuracy"] < modal["modal_accuracy"] and 0 < scored["accuracy"] < modal["accuracy"]


def test_candidate_log_probs_equal_the_training_path_s_log_likelihood(tokenizer, tmp_path):
    """The log-probability `answer_log_probs` gives an answer equals the sum over the answer's labels (and the
    end-of-turn token) of the log-softmax of a training forward pass over the conversation; fp64, so the batch of
    candidates and the padding change nothing beyond rounding (1e-9)."""
    write_dataset(tmp_path, [{"id": "0", "image": "0.png", "conversations": []}])
    model, processor = build_preset("tiny-ta", tokenizer, seed=2)
    model = model.double().eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.model.language_model.parameters():
            parameter.normal_(0, 0.3)
    prompt = "What colour is the image?\nAnswer the question using a single word or phrase."
    candidates = ["red", "green", "blue", "yellow", "3"]
    scores = AnswerGenerator(model, processor).answer_log_probs(
        GenerationRequest(prompt, tmp_path / "images" / "0.png"), candidates)
    encoder = ConversationEncoder(processor, image_folder=tmp_path / "images", max_length=512)
    for candidate in candidates:
        sample = encoder.encode({"id": "0", "image": "0.png", "conversations": [
            {"from": "human", "value": "<image>\n" + prompt}, {"from": "gpt", "value": candidate}]})
        inputs = {"input_ids": torch.tensor([sample.input_ids]),
                  "pixel_values": processor.image_processor(
                      [Image.open(tmp_path / "images" / "0.png").convert("RGB")],
                      return_tensors="pt")["pixel_values"].double()}
        with torch.no_grad():
            log_probs = model(**inputs).logits[0].log_softmax(-1)
        labels = torch.tensor(sample.labels)
        positions = (labels[1:] != -100).nonzero().squeeze(-1)
        reference = log_probs[positions, labels[1:][positions]].sum().item()
        assert scores[candidate] == pytest.approx(reference, abs=1e-9)
    assert len({round(score, 6) for score in scores.values()}) == len(candidates)


def test_shuffled_images_are_a_derangement_and_blank_ones_a_black_image_of_the_same_size(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(7):
        Image.new("RGB", (24, 16), (i * 30, 0, 0)).save(images / f"{i}.png")
    questions = [EvalQuestion(i, images / f"{i}.png", "q") for i in range(7)] + [EvalQuestion(7, None, "text only")]
    shuffled = with_images_replaced(questions, "shuffled", tmp_path / "out")
    assert sorted(q.image for q in shuffled[:7]) == sorted(q.image for q in questions[:7])
    assert all(new.image != old.image for new, old in zip(shuffled[:7], questions[:7], strict=True))
    assert shuffled[7].image is None
    blank = with_images_replaced(questions, "blank", tmp_path / "out")
    assert {q.image for q in blank[:7]} == {tmp_path / "out" / "blank.png"} and blank[7].image is None
    with Image.open(blank[0].image) as image:
        assert image.size == (24, 16) and image.getextrema() == ((0, 0), (0, 0), (0, 0))


def test_vision_warning_names_the_replacement_that_scores_close():
    results = {"real": {"accuracy": 60.0}, "blank": {"accuracy": 40.0}, "shuffled": {"accuracy": 57.0}}
    warning = vision_warning(results)
    assert "shuffled images 57.0" in warning and "blank" not in warning
    assert vision_warning({**results, "shuffled": {"accuracy": 54.9}}) is None


def test_eval_with_the_vision_check_writes_likelihoods_and_keeps_ablations_apart(tokenizer, blended, tmp_path,
                                                                                monkeypatch):
    model, processor = build_preset("tiny-ta", tokenizer, seed=3)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    loads = []
    monkeypatch.setattr("llava_ckd.eval.run.load_vlm", lambda path: loads.append(path) or load_vlm(path))
    results = vision_check(tmp_path / "model", "synthetic", blended / "test", tmp_path / "eval", batch_size=64)
    real = results["real"]
    assert len(loads) == 3  # one load per evaluation serves its answers and its likelihoods
    figures = {"accuracy", "modal_accuracy", "bayes_accuracy", "log_likelihood", "bayes_log_likelihood", "ece"}
    assert figures <= set(real)
    assert real["log_likelihood"] < real["bayes_log_likelihood"]
    rows = read_jsonl(tmp_path / "eval" / LOG_PROBS_FILE, "log-probs")
    assert len(rows) == 120 and all(len(row["log_probs"]) >= 4 for row in rows)
    for use in ("blank", "shuffled"):
        folder = tmp_path / "eval" / f"{use}-images"
        assert json.loads((folder / "fingerprint.json").read_text())["images"] == use
        assert (folder / "answers.jsonl").is_file()
    # a rerun reuses every answer and likelihood
    before = (tmp_path / "eval" / LOG_PROBS_FILE).stat().st_mtime_ns
    assert evaluate(tmp_path / "model", "synthetic", blended / "test", tmp_path / "eval", 64) == real
    assert (tmp_path / "eval" / LOG_PROBS_FILE).stat().st_mtime_ns == before
    assert len(loads) == 3  # nothing left to compute: the model is not loaded
