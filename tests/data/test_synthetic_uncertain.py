"""The benchmark variant whose answers carry real uncertainty (`make-data --blend`)."""

import json
import math
from collections import Counter
from itertools import product
from pathlib import Path

import pytest

from llava_ckd.data.synthetic import (
    BLEND_MIXES,
    COLOUR_WHEEL,
    EVAL_ANSWERS,
    PALETTE,
    Question,
    Scene,
    Shape,
    SyntheticSpec,
    answer_distribution,
    modal_answer,
    write_benchmark,
)
from llava_ckd.files import read_jsonl

FORMS = ("colour_of_shape", "count_all", "count_colour", "count_shape", "colour_and_shape")


@pytest.fixture(scope="module")
def blended(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("blended")
    write_benchmark(out, SyntheticSpec(n_train=1500, n_val=60, n_test=300, n_captions=5, max_objects=3, blend=0.6,
                                       forms=FORMS))
    return out


def test_a_blended_colour_question_is_split_by_the_mix():
    circle = Shape("circle", "blue", 0, 0, blend="purple", mix=0.35)
    scene = Scene((circle, Shape("square", "red", 1, 1)))
    question = Question("colour", "colour_of_shape", "What colour is the circle?", "blue")
    assert answer_distribution(scene, question) == pytest.approx({"blue": 0.65, "purple": 0.35}, abs=1e-12)


def test_count_of_a_colour_is_the_poisson_binomial_of_the_shapes_readings():
    shapes = (Shape("circle", "red", 0, 0, blend="yellow", mix=0.2),
              Shape("square", "yellow", 0, 1, blend="red", mix=0.5),
              Shape("cross", "red", 1, 0))
    question = Question("count", "count_colour", "How many red objects are there?", "2")
    chance_red = [0.8, 0.5, 1.0]
    expected: Counter = Counter()
    for reds in product((0, 1), repeat=3):
        expected[str(sum(reds))] += math.prod(p if red else 1 - p for p, red in zip(chance_red, reds, strict=True))
    expected = {count: p for count, p in expected.items() if p > 0}
    assert answer_distribution(Scene(shapes), question) == pytest.approx(expected, abs=1e-12)


def test_a_blended_shape_is_painted_between_its_two_colours():
    shape = Shape("circle", "green", 0, 0, blend="blue", mix=0.5)
    assert shape.rgb == tuple(round((a + b) / 2) for a, b in zip(PALETTE["green"], PALETTE["blue"], strict=True))
    assert Shape("circle", "green", 0, 0).rgb == PALETTE["green"]


def test_modal_answer_breaks_ties_in_sorted_order():
    assert modal_answer({"purple": 0.5, "blue": 0.5}) == "blue"
    assert modal_answer({"1": 0.3, "2": 0.7}) == "2"


def test_every_blend_goes_to_a_neighbour_on_the_wheel_by_a_listed_mix(blended: Path):
    shapes = [shape for line in (blended / "train" / "scenes.jsonl").read_text().splitlines()
              for shape in json.loads(line)["objects"]]
    mixed = [shape for shape in shapes if "blend" in shape]
    assert 0.5 < len(mixed) / len(shapes) < 0.7  # blend=0.6 of about 4,000 shapes
    for shape in mixed:
        distance = (COLOUR_WHEEL.index(shape["blend"]) - COLOUR_WHEEL.index(shape["colour"])) % len(COLOUR_WHEEL)
        assert distance in (1, len(COLOUR_WHEEL) - 1) and shape["mix"] in BLEND_MIXES


def test_evaluation_keys_carry_ten_draws_of_a_distribution_and_its_mode(blended: Path):
    keys = read_jsonl(blended / "test" / "answer_key.jsonl", "key")
    uncertain = [key for key in keys if len(key["distribution"]) > 1]
    assert len(uncertain) > len(keys) / 4
    for key in keys:
        assert len(key["answers"]) == EVAL_ANSWERS
        assert set(key["answers"]) <= set(key["distribution"])
        assert sum(key["distribution"].values()) == pytest.approx(1, abs=1e-8)
        assert key["answer"] == modal_answer(key["distribution"])
    # the draws follow the distributions: agreement with the mode, against its expectation over all questions
    agree = sum(answer == key["answer"] for key in keys for answer in key["answers"])
    expected = sum(EVAL_ANSWERS * key["distribution"][key["answer"]] for key in keys)
    variance = sum(EVAL_ANSWERS * p * (1 - p) for key in keys for p in [key["distribution"][key["answer"]]])
    assert abs(agree - expected) < 5 * math.sqrt(variance)


def test_training_answers_are_draws_from_the_scene_s_distribution(blended: Path):
    """Replaying the conversations' scenes: the answers to the colour question of a shape blended by `mix` name
    the neighbour in a share `mix` of them (binomial bound, 5 sigma)."""
    conversations = json.loads((blended / "train" / "train.json").read_text())
    scenes = {json.loads(line)["image"]: json.loads(line)["objects"]
              for line in (blended / "train" / "scenes.jsonl").read_text().splitlines()}
    named_neighbour: dict[float, list[bool]] = {mix: [] for mix in BLEND_MIXES}
    for record in conversations:
        turns = record["conversations"]
        for ask, answer in zip(turns[::2], turns[1::2], strict=True):
            if ask["value"].removeprefix("<image>\n").startswith("What colour is the "):
                kind = ask["value"].split("What colour is the ")[1].split("?")[0]
                shape = next(s for s in scenes[record["image"]] if s["kind"] == kind)
                if "blend" in shape:
                    assert answer["value"] in (shape["colour"], shape["blend"])
                    named_neighbour[shape["mix"]].append(answer["value"] == shape["blend"])
    for mix, draws in named_neighbour.items():
        assert len(draws) > 50
        assert abs(sum(draws) - mix * len(draws)) < 5 * math.sqrt(len(draws) * mix * (1 - mix))


def test_questions_are_asked_only_where_every_reading_offers_them():
    """"What colour is the circle?" needs one circle in every reading; a count of red objects is always offered;
    "Is there a red circle?" only where every reading has red and circles, or the red circle."""
    spec = SyntheticSpec(blend=0.5, max_objects=3, forms=FORMS)
    scene = Scene((Shape("circle", "red", 0, 0, blend="yellow", mix=0.5), Shape("square", "blue", 0, 1)))
    texts = {q.text for category in spec.categories for q in spec.questions(category, scene)}
    assert "What colour is the circle?" in texts and "How many red objects are there?" in texts
    assert "Is there a red square?" not in texts      # the red circle read as yellow leaves no red: not asked
    assert "Is there a red circle?" not in texts       # ...and "no" is asked only when red and circles occur apart


def test_a_spec_without_blend_writes_what_it_wrote_before(tmp_path: Path):
    write_benchmark(tmp_path, SyntheticSpec(n_train=3, n_val=2, n_test=2, n_captions=1))
    assert "blend" not in json.loads((tmp_path / "spec.json").read_text())["spec"]
    objects = [o for line in (tmp_path / "test" / "scenes.jsonl").read_text().splitlines()
               for o in json.loads(line)["objects"]]
    assert all(set(o) == {"kind", "colour", "row", "col"} for o in objects)
    assert all(set(k) == {"question_id", "answer", "category", "form"}
               for k in read_jsonl(tmp_path / "test" / "answer_key.jsonl", "key"))


def test_blend_out_of_range_is_refused():
    with pytest.raises(ValueError, match="blend is a share"):
        SyntheticSpec(blend=1.5)



def test_a_conversation_is_one_annotator_s_reading_and_its_caption_comes_last(tmp_path: Path):
    """With --caption-turn the last exchange describes the image; with blends, its colours are the reading the
    conversation's answers were given under: a colour answer names the colour the caption gives that shape."""
    spec = SyntheticSpec(n_train=400, n_val=2, n_test=2, n_captions=2, max_objects=3, blend=0.6, caption_turn=True,
                         forms=("colour_of_shape", "count_colour"))
    write_benchmark(tmp_path, spec)
    checked = 0
    for record in json.loads((tmp_path / "train" / "train.json").read_text()):
        turns = record["conversations"]
        assert turns[0]["value"].startswith("<image>\n") and "<image>" not in "".join(t["value"] for t in turns[1:])
        description = turns[-1]["value"]
        assert description.endswith(".") and " at the " in description
        for ask, answer in zip(turns[:-2:2], turns[1:-2:2], strict=True):
            if "What colour is the " in ask["value"]:
                kind = ask["value"].split("What colour is the ")[1].split("?")[0]
                assert f"a {answer['value']} {kind} at the" in description
                checked += 1
    assert checked > 100


def test_a_category_whose_forms_cannot_vary_is_refused_instead_of_drawing_forever(tmp_path: Path):
    """count_all alone: one question per scene, so no scene offers two different count answers."""
    with pytest.raises(ValueError, match="category 'count'.*add a form"):
        write_benchmark(tmp_path, SyntheticSpec(n_train=1, n_val=1, n_test=1, n_captions=1,
                                                forms=("colour_of_shape", "count_all")))
