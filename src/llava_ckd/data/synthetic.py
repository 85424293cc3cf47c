"""A deterministic synthetic VQA benchmark of coloured shapes, written in LLaVA's formats.

Scenes are ``grid`` x ``grid`` cells (default 4 x 4 cells of 8 px in a 32 px RGB image, so a ViT
with patch 8 sees one cell per image token) holding 1-6 objects, at most one per cell: a circle,
square, triangle or cross in red, green, blue, yellow or purple on a black background, drawn
without anti-aliasing so that each (shape, colour) is one exact pixel pattern.

Questions are about one image, in five categories (the ``category`` field). Every object a
question names is described by colour and shape ("the red circle") and is the only one of its
kind in the scene, so every answer is well defined. Relations compare grid cells: A is *left of*
B when A's column is smaller (any row), *above* B when A's row is smaller (any column).

==========  ====================  ======================================================  ============
category    form                  example                                                 answers
==========  ====================  ======================================================  ============
colour      colour_of_shape       What colour is the circle? (the only circle)            colour name
colour      colour_by_relation    What colour is the object below the blue triangle?      colour name
                                  (asked only when exactly one object is below it)
shape       shape_of_colour       What shape is the red object? (the only red object)     shape name
shape       shape_by_relation     What shape is the object left of the red cross?         shape name
count       count_all             How many objects are there?                             "1".."6"
count       count_colour          How many red objects are there?                         "0".."6"
count       count_shape           How many circles are there?                             "0".."6"
count       count_colour_shape    How many red circles are there?                         "0".."6"
existence   colour_and_shape      Is there a blue triangle? "no" only when the scene      yes / no
                                  has blue objects and triangles, just not together
position    relation_yes_no       Is the red circle left of the green square?             yes / no
position    left_or_right         Is the red circle left or right of the green square?    left / right
position    above_or_below        Is the red circle above or below the green square?      above / below
==========  ====================  ======================================================  ============

Only ``colour_of_shape``, ``shape_of_colour`` and ``count_all`` (a quarter of the evaluation
questions) can be answered from one object or a plain tally; the rest need several objects bound
by colour, shape or position, which is where a larger language model on the same visual features
should gain. Each question takes the least-used category, then the least-used form of that
category, then the least-used answer of that form that the scene offers (ties broken by the
seeded generator). Evaluation scenes are redrawn until they offer two different answers in the
question's category, so categories are exactly balanced, yes/no is 50/50 and counts spread as far
as the scenes allow (0-2 are the common counts). Majority-answer rates on the default test split
(seed 0, 1,000 questions, 200 per category; :func:`majority_baseline`): colour 0.21, shape 0.26,
count 0.28 ("1"), existence 0.50, position 0.17; overall 0.28. A blind model that knows each
question's form and answers that form's majority answer scores 0.35.

Variants: ``max_objects`` caps the objects per scene and ``forms`` restricts the questions to some forms (the
categories left are balanced as above). The study's setting is ``max_objects=3`` with ``colour_of_shape``,
``shape_of_colour``, ``count_all``, ``count_colour``, ``count_shape`` and ``colour_and_shape``: questions that
need the image, without the relations that none of the CPU-sized models learned.

Answers with real uncertainty (``blend`` > 0): that share of the objects is painted between its colour and
a neighbour on the colour wheel (red, yellow, green, blue, purple, red), a share ``mix`` of the way
(``BLEND_MIXES``); an annotator names such an object's colour the neighbour with probability ``mix``. Every
question then has an answer distribution that the scene causes, exact over the annotators' possible readings
of the scene (:func:`answer_distribution`): "What colour is the circle?" for a circle 35% of the way from
blue to purple is blue 0.65 / purple 0.35, counts of a colour and existence questions follow from every
object's reading. A question is asked only when every reading offers it. Training answers are one draw
from the distribution per turn; every evaluation question carries ``EVAL_ANSWERS`` draws (``answers``), the
distribution and its modal answer (``answer``), scored with VQAv2's soft accuracy. Each training conversation
is one annotator's reading of its scene: its answers (and caption) agree with each other. ``caption_turn``
closes every training conversation with a caption exchange, which keeps the grounding signal of pretraining in
fine-tuning (every object's colour, shape and place named); last, so that no answer can be read off it.

Training data: ``captions.json`` pairs each image with a short description in reading order
naming each object's quadrant ("a red circle at the top left, a blue square at the bottom
right."), for projector pretraining; ``train.json`` holds multi-turn conversations (``turns`` questions about one
image) for instruction tuning. Every question, in training and evaluation alike, ends with
LLaVA's short-answer suffix. Layout written by :func:`write_benchmark`::

    spec.json                   format version, the spec, the answer vocabulary per category
    train/images/000000.png     conversation images, then caption images
    train/train.json            [{"id", "image", "conversations": [{"from", "value"}, ...]}]
    train/captions.json         same format, one human/gpt exchange each
    train/scenes.jsonl          {"image", "objects": [{"kind", "colour", "row", "col"}]} per image
    val|test/images/000000.png  one question per image
    val|test/questions.jsonl    {"question_id", "image", "text", "category"}
    val|test/answer_key.jsonl   {"question_id", "answer", "category", "form"} (with ``blend`` also
                                "answers": 10 draws, "distribution": {answer: probability})
    val|test/scenes.jsonl

Each split and the captions draw from their own seeded stream, so the test split does not
change when the training size does; the same spec gives byte-identical files.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

from llava_ckd.data.conversations import SHORT_ANSWER_SUFFIX
from llava_ckd.errors import UserError

FORMAT_VERSION = 1
EVAL_ANSWERS = 10
SCENE_DRAWS = 10_000   # scenes drawn for one evaluation question before its forms are declared unable to vary
BLEND_MIXES = (0.2, 0.35, 0.5)
IMAGE_PREFIX = "<image>\n"

CATEGORIES = ("colour", "shape", "count", "existence", "position")
RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]

PALETTE: dict[str, RGB] = {
    "red": (230, 30, 30),
    "green": (40, 180, 40),
    "blue": (40, 90, 240),
    "yellow": (240, 210, 30),
    "purple": (160, 60, 220),
}
COLOURS = tuple(PALETTE)
COLOUR_WHEEL = ("red", "yellow", "green", "blue", "purple")
KINDS = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
RELATIONS = ("left of", "right of", "above", "below")
BACKGROUND = (0, 0, 0)
CAPTION_PROMPTS = (
    "Describe the image briefly.",
    "Give a short description of this image.",
    "What objects are in the picture?",
    "List the shapes in the image.",
)


class SpecError(UserError, ValueError):
    """A benchmark spec that cannot be rendered; the message names the field."""


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the benchmark's files."""

    seed: int = 0
    n_train: int = 20000
    n_val: int = 500
    n_test: int = 1000
    n_captions: int = 5000
    image_size: int = 32
    grid: int = 4
    min_objects: int = 1
    max_objects: int = 6
    turns: int = 3
    forms: tuple[str, ...] | None = None    # the question forms asked (None: all of FORMS)
    blend: float = 0.0                      # share of objects painted between two neighbouring colours
    caption_turn: bool = False              # training conversations open with a caption exchange

    def __post_init__(self) -> None:
        if self.forms is not None:
            object.__setattr__(self, "forms", tuple(self.forms))
            known = [form for forms in FORMS.values() for form in forms]
            if (unknown := sorted(set(self.forms) - set(known))) or not self.forms:
                raise SpecError(f"forms: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
        if self.image_size % self.grid:
            raise SpecError(f"image_size {self.image_size} is not a multiple of grid {self.grid}")
        if not (1 <= self.min_objects <= self.max_objects and 2 <= self.max_objects <= self.grid**2):
            raise SpecError(f"need 1 <= min_objects <= max_objects and 2 <= max_objects <= grid**2 "
                             f"(relations need two objects), got {self.min_objects}, {self.max_objects}, "
                             f"grid {self.grid}")
        if not 0.0 <= self.blend <= 1.0:
            raise SpecError(f"blend is a share of the objects, in [0, 1], got {self.blend}")
        if min(self.n_train, self.n_val, self.n_test, self.n_captions) < 0 or self.turns < 1:
            raise SpecError("split sizes must be >= 0 and turns >= 1")

    def record(self) -> dict:
        """The spec as spec.json stores it (``blend`` and ``caption_turn`` only when set, so earlier benchmarks
        keep their files)."""
        fields = asdict(self)
        for name in ("blend", "caption_turn"):
            if not fields[name]:
                del fields[name]
        return fields

    @property
    def cell_size(self) -> int:
        return self.image_size // self.grid

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories that have a form asked."""
        return tuple(category for category in CATEGORIES if self.questions(category, Scene(())) is not None)

    def questions(self, category: str, scene: Scene) -> list[Question] | None:
        """The questions of `category` that `scene` offers in the asked forms (in every reading of a blended
        scene); None when no form is asked."""
        if self.forms is not None and not set(FORMS[category]) & set(self.forms):
            return None
        asked = [q for q in QUESTION_TYPES[category](scene) if self.forms is None or q.form in self.forms]
        if scene.blended():
            offered_in = [{q.text for q in QUESTION_TYPES[category](world)} for _, world in scene.readings()]
            asked = [q for q in asked if all(q.text in texts for texts in offered_in)]
        return asked


@dataclass(frozen=True)
class Shape:
    """``blend``: the neighbouring colour this one is painted towards, a share ``mix`` of the way."""

    kind: str
    colour: str
    row: int
    col: int
    blend: str | None = None
    mix: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"

    @property
    def rgb(self) -> RGB:
        if self.blend is None:
            return PALETTE[self.colour]
        return tuple(round((1 - self.mix) * a + self.mix * b)
                     for a, b in zip(PALETTE[self.colour], PALETTE[self.blend], strict=True))

    def readings(self) -> list[tuple[float, Shape]]:
        """How annotators name this shape's colour: (probability, the shape as named)."""
        if self.blend is None:
            return [(1.0, self)]
        return [(1 - self.mix, Shape(self.kind, self.colour, self.row, self.col)),
                (self.mix, Shape(self.kind, self.blend, self.row, self.col))]

    def read(self, rng: random.Random) -> Shape:
        """The shape as one annotator names it."""
        if self.blend is None:
            return self
        return self.readings()[rng.random() < self.mix][1]

    def record(self) -> dict:
        """The shape as scenes.jsonl stores it (blend fields only for a blended shape)."""
        fields = asdict(self)
        if self.blend is None:
            del fields["blend"], fields["mix"]
        return fields


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]

    def count(self, colour: str | None = None, kind: str | None = None) -> int:
        return sum((colour is None or s.colour == colour) and (kind is None or s.kind == kind)
                   for s in self.shapes)

    def uniquely_named(self) -> list[Shape]:
        """The shapes that "the <colour> <kind>" picks out."""
        return [s for s in self.shapes if self.count(s.colour, s.kind) == 1]

    def blended(self) -> bool:
        return any(s.blend is not None for s in self.shapes)

    def read(self, rng: random.Random) -> Scene:
        """The scene as one annotator names its colours."""
        return Scene(tuple(shape.read(rng) for shape in self.shapes))

    def readings(self) -> list[tuple[float, Scene]]:
        """Every way annotators can name the colours (each shape read independently), with its probability."""
        worlds = [(1.0, ())]
        for shape in self.shapes:
            worlds = [(p * q, (*named, read)) for p, named in worlds for q, read in shape.readings()]
        return [(p, Scene(named)) for p, named in worlds if p > 0]


def answer_distribution(scene: Scene, question: Question) -> dict[str, float]:
    """The probability of each answer to `question` over the readings of `scene` (a question every reading
    offers; :meth:`SyntheticSpec.questions` asks no other)."""
    distribution: Counter[str] = Counter()
    for p, world in scene.readings():
        answers = {q.text: q.answer for q in QUESTION_TYPES[question.category](world)}
        distribution[answers[question.text]] += p
    return dict(distribution)


def modal_answer(distribution: dict[str, float]) -> str:
    """The most likely answer; a tie goes to the answer first in sorted order."""
    return min(distribution, key=lambda answer: (-round(distribution[answer], 9), answer))


def draw_answers(rng: random.Random, distribution: dict[str, float], n: int) -> list[str]:
    answers = sorted(distribution)
    return rng.choices(answers, weights=[distribution[a] for a in answers], k=n)


@dataclass(frozen=True)
class Question:
    category: str
    form: str
    text: str
    answer: str


def sample_scene(rng: random.Random, spec: SyntheticSpec) -> Scene:
    """Uniform object count, distinct cells, independent shape and colour; shapes in reading order. With
    ``spec.blend``, each shape is blended with that probability, towards either neighbour, by a mix from
    ``BLEND_MIXES``."""
    n_objects = rng.randint(spec.min_objects, spec.max_objects)
    cells = sorted(rng.sample(range(spec.grid**2), n_objects))
    shapes = [Shape(rng.choice(KINDS), rng.choice(COLOURS), *divmod(cell, spec.grid)) for cell in cells]
    if spec.blend:
        shapes = [_blended(rng, shape) if rng.random() < spec.blend else shape for shape in shapes]
    return Scene(tuple(shapes))


def _blended(rng: random.Random, shape: Shape) -> Shape:
    at = COLOUR_WHEEL.index(shape.colour)
    neighbour = COLOUR_WHEEL[(at + rng.choice((-1, 1))) % len(COLOUR_WHEEL)]
    return Shape(shape.kind, shape.colour, shape.row, shape.col, neighbour, rng.choice(BLEND_MIXES))


def render(scene: Scene, spec: SyntheticSpec) -> Image.Image:
    image = Image.new("RGB", (spec.image_size, spec.image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = spec.cell_size
    margin = max(1, cell // 8)
    for shape in scene.shapes:
        left, top = shape.col * cell + margin, shape.row * cell + margin
        right, bottom = (shape.col + 1) * cell - 1 - margin, (shape.row + 1) * cell - 1 - margin
        _DRAWERS[shape.kind](draw, (left, top, right, bottom), shape.rgb)
    return image


def _draw_circle(draw: ImageDraw.ImageDraw, box: Box, fill: RGB) -> None:
    draw.ellipse(box, fill=fill)


def _draw_square(draw: ImageDraw.ImageDraw, box: Box, fill: RGB) -> None:
    draw.rectangle(box, fill=fill)


def _draw_triangle(draw: ImageDraw.ImageDraw, box: Box, fill: RGB) -> None:
    left, top, right, bottom = box
    width = right - left + 1
    apex = [(left + (width - 1) // 2, top), (left + width // 2, top)]
    draw.polygon([*apex, (right, bottom), (left, bottom)], fill=fill)


def _draw_cross(draw: ImageDraw.ImageDraw, box: Box, fill: RGB) -> None:
    left, top, right, bottom = box
    width = right - left + 1
    bar = width // 3
    start = (width - bar) // 2
    draw.rectangle((left + start, top, left + start + bar - 1, bottom), fill=fill)
    draw.rectangle((left, top + start, right, top + start + bar - 1), fill=fill)


_DRAWERS = {"circle": _draw_circle, "square": _draw_square, "triangle": _draw_triangle, "cross": _draw_cross}


def caption(scene: Scene, spec: SyntheticSpec) -> str:
    return ", ".join(f"a {s.name} at the {_place(s, spec.grid)}" for s in scene.shapes) + "."


def _place(shape: Shape, grid: int) -> str:
    vertical = _side(shape.row, grid, "top", "bottom")
    horizontal = _side(shape.col, grid, "left", "right")
    return "centre" if vertical == horizontal else f"{vertical} {horizontal}"


def _side(index: int, grid: int, low: str, high: str) -> str:
    if 2 * index + 1 == grid:
        return "centre"
    return low if 2 * index + 1 < grid else high


def holds(relation: str, a: Shape, b: Shape) -> bool:
    """Whether ``a`` is ``relation`` ``b`` ("left of", "right of", "above", "below")."""
    return {"left of": a.col < b.col, "right of": a.col > b.col,
            "above": a.row < b.row, "below": a.row > b.row}[relation]


def _only_related(scene: Scene) -> Iterator[tuple[Shape, str, Shape]]:
    """(anchor, relation, the one object in that relation to the anchor), for named anchors."""
    for anchor in scene.uniquely_named():
        for relation in RELATIONS:
            related = [s for s in scene.shapes if holds(relation, s, anchor)]
            if len(related) == 1:
                yield anchor, relation, related[0]


def colour_questions(scene: Scene) -> list[Question]:
    by_shape = [Question("colour", "colour_of_shape", f"What colour is the {s.kind}?", s.colour)
                for s in scene.shapes if scene.count(kind=s.kind) == 1]
    by_relation = [Question("colour", "colour_by_relation",
                            f"What colour is the object {relation} the {anchor.name}?", only.colour)
                   for anchor, relation, only in _only_related(scene)]
    return by_shape + by_relation


def shape_questions(scene: Scene) -> list[Question]:
    by_colour = [Question("shape", "shape_of_colour", f"What shape is the {s.colour} object?", s.kind)
                 for s in scene.shapes if scene.count(colour=s.colour) == 1]
    by_relation = [Question("shape", "shape_by_relation",
                            f"What shape is the object {relation} the {anchor.name}?", only.kind)
                   for anchor, relation, only in _only_related(scene)]
    return by_colour + by_relation


def count_questions(scene: Scene) -> list[Question]:
    def ask(form: str, subject: str, colour: str | None = None, kind: str | None = None) -> Question:
        return Question("count", form, f"How many {subject} are there?", str(scene.count(colour, kind)))

    return [ask("count_all", "objects"),
            *(ask("count_colour", f"{colour} objects", colour=colour) for colour in COLOURS),
            *(ask("count_shape", PLURALS[kind], kind=kind) for kind in KINDS),
            *(ask("count_colour_shape", f"{colour} {PLURALS[kind]}", colour, kind)
              for colour in COLOURS for kind in KINDS)]


def existence_questions(scene: Scene) -> list[Question]:
    """Yes for every colour-shape pair present; no for pairs whose colour and shape both occur apart."""
    questions = []
    for colour in COLOURS:
        for kind in KINDS:
            present = scene.count(colour, kind) > 0
            if present or (scene.count(colour=colour) and scene.count(kind=kind)):
                questions.append(Question("existence", "colour_and_shape", f"Is there a {colour} {kind}?",
                                          "yes" if present else "no"))
    return questions


def position_questions(scene: Scene) -> list[Question]:
    named = scene.uniquely_named()
    questions = []
    for a in named:
        for b in named:
            if a == b:
                continue
            questions += [Question("position", "relation_yes_no", f"Is the {a.name} {relation} the {b.name}?",
                                   "yes" if holds(relation, a, b) else "no") for relation in RELATIONS]
            if a.col != b.col:
                questions.append(Question("position", "left_or_right",
                                          f"Is the {a.name} left or right of the {b.name}?",
                                          "left" if a.col < b.col else "right"))
            if a.row != b.row:
                questions.append(Question("position", "above_or_below",
                                          f"Is the {a.name} above or below the {b.name}?",
                                          "above" if a.row < b.row else "below"))
    return questions


QUESTION_TYPES: dict[str, Callable[[Scene], list[Question]]] = {
    "colour": colour_questions,
    "shape": shape_questions,
    "count": count_questions,
    "existence": existence_questions,
    "position": position_questions,
}
FORMS: dict[str, tuple[str, ...]] = {
    "colour": ("colour_of_shape", "colour_by_relation"),
    "shape": ("shape_of_colour", "shape_by_relation"),
    "count": ("count_all", "count_colour", "count_shape", "count_colour_shape"),
    "existence": ("colour_and_shape",),
    "position": ("relation_yes_no", "left_or_right", "above_or_below"),
}


def answer_vocabulary(spec: SyntheticSpec) -> dict[str, list[str]]:
    return {
        "colour": list(COLOURS),
        "shape": list(KINDS),
        "count": [str(n) for n in range(spec.max_objects + 1)],
        "existence": ["yes", "no"],
        "position": ["yes", "no", "left", "right", "above", "below"],
    }


class _Balancer:
    """Picks the least-used option within a scope (ties at random), so counts stay as even as offers allow."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[Hashable, str]] = Counter()

    def pick(self, rng: random.Random, scope: Hashable, options: Iterable[str]) -> str:
        offered = sorted(set(options))
        fewest = min(self._counts[scope, option] for option in offered)
        choice = rng.choice([option for option in offered if self._counts[scope, option] == fewest])
        self._counts[scope, choice] += 1
        return choice

    def pick_question(self, rng: random.Random, candidates: list[Question]) -> Question:
        """The least-used form of the candidates' category, then that form's least-used answer."""
        category = candidates[0].category
        form = self.pick(rng, category, (q.form for q in candidates))
        of_form = [q for q in candidates if q.form == form]
        answer = self.pick(rng, (category, form), (q.answer for q in of_form))
        return rng.choice([q for q in of_form if q.answer == answer])


@dataclass(frozen=True)
class _Item:
    scene: Scene
    questions: tuple[Question, ...]

    def distribution(self, question: Question) -> dict[str, float]:
        return answer_distribution(self.scene, question) if self.scene.blended() else {question.answer: 1.0}


def _eval_items(rng: random.Random, spec: SyntheticSpec, n_items: int) -> Iterator[_Item]:
    """One question per image. The scene is redrawn until it offers two different answers in the chosen
    category, so that the balancer always has a choice (yes/no forms come out exactly 50/50)."""
    balancer = _Balancer()
    for _ in range(n_items):
        category = balancer.pick(rng, "category", spec.categories)
        candidates: list[Question] = []
        for _ in range(SCENE_DRAWS):
            scene = sample_scene(rng, spec)
            candidates = spec.questions(category, scene)
            if len({q.answer for q in candidates}) >= 2:
                break
        else:
            raise SpecError(f"no scene of {SCENE_DRAWS} offers two different answers in category {category!r} "
                             f"with forms {', '.join(spec.forms or ())}: add a form of that category")
        yield _Item(scene, (balancer.pick_question(rng, candidates),))


def _conversation_items(rng: random.Random, spec: SyntheticSpec, n_items: int) -> Iterator[_Item]:
    """``spec.turns`` distinct questions per image, from the least-used categories the scene offers,
    repeating a category only when the scene offers no other."""
    balancer = _Balancer()
    for _ in range(n_items):
        scene = sample_scene(rng, spec)
        unasked = {category: spec.questions(category, scene) for category in spec.categories}
        questions: list[Question] = []
        for _ in range(spec.turns):
            offered = [category for category, candidates in unasked.items() if candidates]
            if not offered:
                break
            fresh = [category for category in offered if category not in {q.category for q in questions}]
            category = balancer.pick(rng, "category", fresh or offered)
            question = balancer.pick_question(rng, unasked[category])
            unasked[category].remove(question)
            questions.append(question)
        yield _Item(scene, tuple(questions))


def _caption_items(rng: random.Random, spec: SyntheticSpec, n_items: int) -> Iterator[tuple[Scene, str]]:
    for _ in range(n_items):
        yield sample_scene(rng, spec), rng.choice(CAPTION_PROMPTS)


def _stream(spec: SyntheticSpec, name: str) -> random.Random:
    """An independent seeded generator per split, so one split's size never changes another's content."""
    return random.Random(f"llava-ckd synthetic/{spec.seed}/{name}")


def write_benchmark(out: Path, spec: SyntheticSpec) -> None:
    """Render the benchmark described by ``spec`` into ``out`` (layout in the module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "spec.json", {"format_version": FORMAT_VERSION, "spec": spec.record(),
                                    "answers": answer_vocabulary(spec)})
    _write_train(out / "train", spec)
    for split, n_items in (("val", spec.n_val), ("test", spec.n_test)):
        _write_eval(out / split, spec, n_items)


def _write_train(folder: Path, spec: SyntheticSpec) -> None:
    """Each training conversation is one annotator's: with ``blend``, one reading of the scene's colours drawn per
    conversation gives its caption and every answer."""
    conversations, captions = [], []
    annotators = _stream(spec, "train answers")
    caption_prompts = _stream(spec, "train caption prompts")
    with _ImageWriter(folder, spec, spec.n_train + spec.n_captions) as images:
        for item in _conversation_items(_stream(spec, "train"), spec, spec.n_train):
            image = images.write(item.scene)
            reading = item.scene.read(annotators) if spec.blend else item.scene
            exchanges = []
            for question in item.questions:
                answer = question.answer
                if spec.blend:
                    answer = {q.text: q.answer for q in QUESTION_TYPES[question.category](reading)}[question.text]
                exchanges.append((question.text + SHORT_ANSWER_SUFFIX, answer))
            if spec.caption_turn:
                exchanges.append((caption_prompts.choice(CAPTION_PROMPTS), caption(reading, spec)))
            turns = []
            for prompt, answer in exchanges:
                turns += [{"from": "human", "value": ("" if turns else IMAGE_PREFIX) + prompt},
                          {"from": "gpt", "value": answer}]
            conversations.append({"id": Path(image).stem, "image": image, "conversations": turns})
        caption_readers = _stream(spec, "caption answers")
        for scene, prompt in _caption_items(_stream(spec, "captions"), spec, spec.n_captions):
            image = images.write(scene)
            captions.append({"id": Path(image).stem, "image": image, "conversations": [
                {"from": "human", "value": IMAGE_PREFIX + prompt},
                {"from": "gpt", "value": caption(scene.read(caption_readers) if spec.blend else scene, spec)},
            ]})
    _write_json(folder / "train.json", conversations)
    _write_json(folder / "captions.json", captions)


def _write_eval(folder: Path, spec: SyntheticSpec, n_items: int) -> None:
    questions, answers = [], []
    annotators = _stream(spec, f"{folder.name} answers")
    with _ImageWriter(folder, spec, n_items) as images:
        for item in _eval_items(_stream(spec, folder.name), spec, n_items):
            image = images.write(item.scene)
            for question in item.questions:
                question_id = len(questions)
                questions.append({"question_id": question_id, "image": image,
                                  "text": question.text + SHORT_ANSWER_SUFFIX, "category": question.category})
                key = {"question_id": question_id, "answer": question.answer, "category": question.category,
                       "form": question.form}
                if spec.blend:
                    distribution = item.distribution(question)
                    key |= {"answer": modal_answer(distribution),
                            "answers": draw_answers(annotators, distribution, EVAL_ANSWERS),
                            "distribution": {a: round(p, 9) for a, p in sorted(distribution.items())}}
                answers.append(key)
    _write_jsonl(folder / "questions.jsonl", questions)
    _write_jsonl(folder / "answer_key.jsonl", answers)


class _ImageWriter:
    """Saves scenes as numbered PNGs in ``folder/images`` and their objects in ``folder/scenes.jsonl``."""

    def __init__(self, folder: Path, spec: SyntheticSpec, total: int) -> None:
        self._spec = spec
        self._images = folder / "images"
        self._images.mkdir(parents=True, exist_ok=True)
        self._scenes = (folder / "scenes.jsonl").open("w")
        self._progress = tqdm(total=total, desc=f"rendering {folder.name}", unit="img")
        self._written = 0

    def __enter__(self) -> _ImageWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._scenes.close()
        self._progress.close()

    def write(self, scene: Scene) -> str:
        name = f"{self._written:06d}.png"
        render(scene, self._spec).save(self._images / name)
        self._scenes.write(json.dumps({"image": name, "objects": [s.record() for s in scene.shapes]}) + "\n")
        self._written += 1
        self._progress.update()
        return name


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n")


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def majority_baseline(answer_key_path: Path, by: str = "category") -> dict[str, float]:
    """Accuracy of answering every question the most common answer of its group *in this key* (the best a
    model blind to the image can do knowing only the group), per category and ``"overall"``.

    ``by="category"``: one answer per category; ``by="form"``: one per question template (the blind guesser
    that knows the template, e.g. "How many red circles...?" -> "0").
    """
    rows = [json.loads(line) for line in Path(answer_key_path).read_text().splitlines()]
    answers_by_group: dict[str, Counter[str]] = {}
    for row in rows:
        answers_by_group.setdefault(row[by], Counter())[row["answer"]] += 1
    guess = {group: answers.most_common(1)[0][0] for group, answers in answers_by_group.items()}
    right: dict[str, list[bool]] = {}
    for row in rows:
        right.setdefault(row["category"], []).append(guess[row[by]] == row["answer"])
    rates = {category: sum(hits) / len(hits) for category, hits in right.items()}
    rates["overall"] = sum(map(sum, right.values())) / len(rows)
    return rates
