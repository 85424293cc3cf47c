import json
import random
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava_ckd.data.synthetic import (
    CATEGORIES,
    PALETTE,
    QUESTION_TYPES,
    SHORT_ANSWER_SUFFIX,
    Scene,
    Shape,
    SyntheticSpec,
    caption,
    majority_baseline,
    render,
    sample_scene,
    write_benchmark,
)

SPEC = SyntheticSpec(seed=3, n_train=60, n_val=25, n_test=250, n_captions=15)
SINGULAR = {"circles": "circle", "squares": "square", "triangles": "triangle", "crosses": "cross"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_benchmark(out, SPEC)
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_scenes(folder: Path) -> dict[str, list[dict]]:
    return {row["image"]: row["objects"] for row in read_jsonl(folder / "scenes.jsonl")}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# An answer oracle written independently of the generator: it parses the question text.
def the(objects: list[dict], colour: str, kind: str) -> dict:
    matches = [o for o in objects if o["colour"] == colour and o["kind"] == kind]
    assert len(matches) == 1, f"'the {colour} {kind}' is not unique in {objects}"
    return matches[0]


def related(a: dict, relation: str, b: dict) -> bool:
    return {"left of": a["col"] < b["col"], "right of": a["col"] > b["col"],
            "above": a["row"] < b["row"], "below": a["row"] > b["row"]}[relation]


def only_related(objects: list[dict], relation: str, anchor: dict) -> dict:
    matches = [o for o in objects if related(o, relation, anchor)]
    assert len(matches) == 1, f"no single object {relation} {anchor} in {objects}"
    return matches[0]


def oracle(question: str, objects: list[dict]) -> str:
    question = question.removeprefix("<image>\n").removesuffix(SHORT_ANSWER_SUFFIX)
    relation = "(left of|right of|above|below)"
    if m := re.fullmatch(r"What colour is the (\w+)\?", question):
        (only,) = [o for o in objects if o["kind"] == m[1]]
        return only["colour"]
    if m := re.fullmatch(rf"What colour is the object {relation} the (\w+) (\w+)\?", question):
        return only_related(objects, m[1], the(objects, m[2], m[3]))["colour"]
    if m := re.fullmatch(r"What shape is the (\w+) object\?", question):
        (only,) = [o for o in objects if o["colour"] == m[1]]
        return only["kind"]
    if m := re.fullmatch(rf"What shape is the object {relation} the (\w+) (\w+)\?", question):
        return only_related(objects, m[1], the(objects, m[2], m[3]))["kind"]
    if question == "How many objects are there?":
        return str(len(objects))
    if m := re.fullmatch(r"How many (\w+) objects are there\?", question):
        return str(sum(o["colour"] == m[1] for o in objects))
    if m := re.fullmatch(r"How many (\w+) are there\?", question):
        return str(sum(o["kind"] == SINGULAR[m[1]] for o in objects))
    if m := re.fullmatch(r"How many (\w+) (\w+) are there\?", question):
        return str(sum(o["colour"] == m[1] and o["kind"] == SINGULAR[m[2]] for o in objects))
    if m := re.fullmatch(r"Is there a (\w+) (\w+)\?", question):
        present = any(o["colour"] == m[1] and o["kind"] == m[2] for o in objects)
        if not present:  # a "no" always has distractors sharing the colour and the shape
            assert any(o["colour"] == m[1] for o in objects) and any(o["kind"] == m[2] for o in objects)
        return "yes" if present else "no"
    if m := re.fullmatch(rf"Is the (\w+) (\w+) {relation} the (\w+) (\w+)\?", question):
        return "yes" if related(the(objects, m[1], m[2]), m[3], the(objects, m[4], m[5])) else "no"
    if m := re.fullmatch(r"Is the (\w+) (\w+) (left or right of|above or below) the (\w+) (\w+)\?", question):
        a, b = the(objects, m[1], m[2]), the(objects, m[4], m[5])
        if m[3] == "left or right of":
            assert a["col"] != b["col"]
            return "left" if a["col"] < b["col"] else "right"
        assert a["row"] != b["row"]
        return "above" if a["row"] < b["row"] else "below"
    raise AssertionError(f"unknown question: {question!r}")


def test_same_spec_gives_identical_files_and_seed_changes_them(bench: Path, tmp_path: Path) -> None:
    expected = tree(bench)
    write_benchmark(tmp_path / "again", SPEC)
    assert tree(tmp_path / "again") == expected

    write_benchmark(tmp_path / "other", replace(SPEC, seed=4))
    other = tree(tmp_path / "other")
    for name in ("test/questions.jsonl", "train/train.json", "train/captions.json", "val/images/000000.png"):
        assert other[name] != expected[name]


def test_split_content_does_not_depend_on_other_split_sizes(bench: Path, tmp_path: Path) -> None:
    write_benchmark(tmp_path, replace(SPEC, n_train=5, n_captions=2, n_val=3))
    assert tree(tmp_path / "test") == tree(bench / "test")


def test_spec_json_records_the_spec(bench: Path) -> None:
    written = json.loads((bench / "spec.json").read_text())
    assert written["format_version"] == 1
    assert SyntheticSpec(**written["spec"]) == SPEC
    assert written["answers"]["count"] == [str(n) for n in range(SPEC.max_objects + 1)]


def test_training_conversations_are_llava_multi_turn(bench: Path) -> None:
    conversations = json.loads((bench / "train" / "train.json").read_text())
    assert len(conversations) == SPEC.n_train
    scenes = read_scenes(bench / "train")
    for record in conversations:
        assert list(record) == ["id", "image", "conversations"]
        assert (bench / "train" / "images" / record["image"]).is_file()
        turns = record["conversations"]
        assert len(turns) == 2 * SPEC.turns
        assert [t["from"] for t in turns] == ["human", "gpt"] * SPEC.turns
        humans = [t["value"] for t in turns[::2]]
        assert humans[0].startswith("<image>\n")
        assert not any("<image>" in h for h in humans[1:])
        assert all(h.endswith(SHORT_ANSWER_SUFFIX) for h in humans)
        assert len(set(humans)) == len(humans)
        for human, gpt in zip(humans, turns[1::2], strict=True):
            assert gpt["value"] == oracle(human, scenes[record["image"]])


def test_captions_list_the_objects(bench: Path) -> None:
    captions = json.loads((bench / "train" / "captions.json").read_text())
    assert len(captions) == SPEC.n_captions
    scenes = read_scenes(bench / "train")
    train_images = {r["image"] for r in json.loads((bench / "train" / "train.json").read_text())}
    for record in captions:
        assert record["image"] not in train_images
        human, gpt = record["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert gpt["from"] == "gpt" and gpt["value"].endswith(".")
        objects = scenes[record["image"]]
        assert gpt["value"].count(", ") == len(objects) - 1
        for obj in objects:
            assert f"a {obj['colour']} {obj['kind']} at the " in gpt["value"]


def test_caption_names_coarse_places_in_reading_order() -> None:
    scene = Scene((Shape("circle", "red", 0, 1), Shape("square", "blue", 3, 2)))
    assert caption(scene, SPEC) == "a red circle at the top left, a blue square at the bottom right."
    assert caption(Scene((Shape("cross", "green", 1, 1),)), replace(SPEC, grid=3, image_size=24)) == \
        "a green cross at the centre."


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_files_are_llava_questions_with_correct_answers(bench: Path, split: str) -> None:
    questions = read_jsonl(bench / split / "questions.jsonl")
    answers = read_jsonl(bench / split / "answer_key.jsonl")
    scenes = read_scenes(bench / split)
    assert len(questions) == len(answers) == getattr(SPEC, f"n_{split}")
    for question, answer in zip(questions, answers, strict=True):
        assert list(question) == ["question_id", "image", "text", "category"]
        assert list(answer) == ["question_id", "answer", "category", "form"]
        assert question["question_id"] == answer["question_id"]
        assert question["category"] == answer["category"] in CATEGORIES
        assert question["text"].endswith(SHORT_ANSWER_SUFFIX) and "<image>" not in question["text"]
        assert answer["answer"] == oracle(question["text"], scenes[question["image"]])


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_images_exist_and_show_the_scene(bench: Path, split: str) -> None:
    cell = SPEC.cell_size
    images = sorted((bench / split / "images").iterdir())
    scenes = read_scenes(bench / split)
    assert [p.name for p in images] == sorted(scenes)
    for path in images[:40]:
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (SPEC.image_size, SPEC.image_size, 3)
        occupied = {(o["row"], o["col"]): o for o in scenes[path.name]}
        for row in range(SPEC.grid):
            for col in range(SPEC.grid):
                patch = pixels[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell].reshape(-1, 3)
                colours = {tuple(int(v) for v in p) for p in patch}
                if (row, col) not in occupied:
                    assert colours == {(0, 0, 0)}
                    continue
                fill = PALETTE[occupied[row, col]["colour"]]
                assert colours == {(0, 0, 0), fill}  # no anti-aliasing: background and one colour
                assert tuple(pixels[row * cell + cell // 2, col * cell + cell // 2]) == fill


def test_each_kind_is_a_distinct_pixel_pattern() -> None:
    masks = set()
    for kind in ("circle", "square", "triangle", "cross"):
        pixels = np.asarray(render(Scene((Shape(kind, "red", 0, 0),)), SPEC))
        masks.add(pixels[:SPEC.cell_size, :SPEC.cell_size].any(axis=2).tobytes())
    assert len(masks) == 4


def test_question_generators_agree_with_the_oracle_on_sampled_scenes() -> None:
    rng = random.Random(0)
    for _ in range(100):
        scene = sample_scene(rng, SPEC)
        objects = [{"kind": s.kind, "colour": s.colour, "row": s.row, "col": s.col} for s in scene.shapes]
        assert SPEC.min_objects <= len(objects) <= SPEC.max_objects
        assert len({(o["row"], o["col"]) for o in objects}) == len(objects)
        for category, ask in QUESTION_TYPES.items():
            for question in ask(scene):
                assert question.category == category
                assert question.answer == oracle(question.text, objects)


def test_categories_and_answers_are_balanced(bench: Path) -> None:
    answers = read_jsonl(bench / "test" / "answer_key.jsonl")
    by_category = Counter(a["category"] for a in answers)
    assert set(by_category) == set(CATEGORIES)
    assert max(by_category.values()) - min(by_category.values()) <= 1
    rates = majority_baseline(bench / "test" / "answer_key.jsonl")
    assert rates["existence"] <= 0.52
    assert all(rates[c] <= 0.4 for c in CATEGORIES if c != "existence")
    yes_no = Counter(a["answer"] for a in answers if a["answer"] in ("yes", "no"))
    assert abs(yes_no["yes"] - yes_no["no"]) <= 2
    forms = Counter(a["form"] for a in answers)
    simple = forms["colour_of_shape"] + forms["shape_of_colour"] + forms["count_all"]
    assert simple / len(answers) < 0.3  # most questions need several objects


def test_majority_baseline_uses_the_keys_own_majority(tmp_path: Path) -> None:
    key = tmp_path / "answer_key.jsonl"
    rows = [("count", "1"), ("count", "1"), ("count", "2"), ("existence", "yes"), ("existence", "no")]
    key.write_text("".join(json.dumps({"question_id": i, "answer": a, "category": c}) + "\n"
                           for i, (c, a) in enumerate(rows)))
    assert majority_baseline(key) == {"count": 2 / 3, "existence": 0.5, "overall": 3 / 5}


@pytest.mark.parametrize("bad", [{"image_size": 30}, {"max_objects": 17}, {"min_objects": 0}, {"max_objects": 1},
                                 {"min_objects": 4, "max_objects": 3}, {"turns": 0}, {"n_test": -1}])
def test_spec_rejects_impossible_settings(bad: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticSpec(**bad)
