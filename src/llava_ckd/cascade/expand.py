"""From a recipe to the stages to run: one node per distinct stage, identified by its content, in run order.

Each model (the Student, each Teacher) follows the stage template; `plans.distils_from` says, per plan,
whom it distils from. A distilling stage runs once per Teacher, in order, each run starting from the model
the previous one produced; where a model distils from nobody, the stage becomes its `without_kd` kind or
is skipped. Teachers that are ready checkpoints run only their distilling stages (if any plan distils them).

A node's hash covers its resolved config, with the paths of other stages' outputs replaced by those
stages' hashes, and fingerprints of what it reads from outside the cascade (the conversation file's
sha256; the name, size and mtime of every image it names, and of the files in checkpoint, tokenizer and
vision folders). A stage whose input stage changed thus gets a new hash and folder even when its
own config did not change, and plans that ask for the same content share one node.

Folders: STORE/stages/<model>/<step>-<hash[:10]>/ holds a stage's Trainer output; cached Teacher signals
go to STORE/signals/<teacher>/<step>-<hash[:10]>/signals/ (STORE is the recipe's `store`, else its `output`).

With `budget: per-plan` a distilling stage's `max_steps` is split over the Teachers distilled from
(`split_steps`), so every plan gives the model the same number of steps in that stage.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from llava_ckd.cascade.capacity import HUB_ID, chain_capacities
from llava_ckd.cascade.plans import STUDENT, distils_from
from llava_ckd.cascade.recipe import (
    Recipe,
    StageTemplate,
    deep_merge,
    probe_config,
    template_fields,
    without_distillation,
)
from llava_ckd.config import ConfigError, DataConfig, StageConfig
from llava_ckd.data.conversations import images_of
from llava_ckd.fingerprint import file_sha256, folder_files
from llava_ckd.models.source import ModelSource
from llava_ckd.train.stage import FINAL

DEFAULT_TOP_K = 64


@dataclass(frozen=True)
class SignalsJob:
    """A Teacher's top-k signals over one conversation file (`distill.cache.write_teacher_cache`)."""

    teacher: ModelSource
    conversations: Path
    images: Path | None
    max_length: int
    top_k: int
    batch_size: int
    output_dir: Path

    def resolved(self) -> dict:
        return {"teacher": self.teacher.model_dump(mode="json"), "conversations": str(self.conversations),
                "images": None if self.images is None else str(self.images), "max_length": self.max_length,
                "top_k": self.top_k, "batch_size": self.batch_size, "output_dir": str(self.output_dir)}


@dataclass(frozen=True, eq=False)
class Node:
    model: str                                     # "student" or "teacher-<name>"
    step: str                                      # "sft", "dft-from-tiny-ta", "signals-train"
    hash: str
    job: StageConfig | SignalsJob
    directory: Path
    inputs: dict[str, Node]                        # role ("model", "teacher", "signals") -> producing stage
    files: dict[str, object]                       # fingerprints of the inputs from outside the cascade
    teacher: str | None = None                     # the chain Teacher this stage distils from or runs
    teacher_model: Node | ModelSource | None = None
    distilled: bool = False                        # this stage, or one it builds on, distils

    @property
    def output(self) -> Path:
        return self.job.output_dir / FINAL if isinstance(self.job, StageConfig) else self.job.output_dir


@dataclass(frozen=True)
class Route:
    """How one model comes about in one plan: its stages, with those of the Teachers it distils from, and the result."""

    stages: tuple[Node, ...]
    final: Node | ModelSource


@dataclass(frozen=True)
class Cascade:
    recipe: Recipe
    source: Path
    capacities: dict[str, int]
    stages: tuple[Node, ...]                       # run order: every Teacher's stages, then the Student's
    plans: dict[str, tuple[Node, ...]]             # plan -> the stages it needs, in run order
    students: dict[str, Node]                      # plan -> the stage that makes its final Student
    names: dict[str, str]                          # hash -> display name
    missing: tuple[str, ...] = ()                  # inputs not there yet, one line each (field: what is missing)

    def name(self, node: Node) -> str:
        return self.names[node.hash]

    def plans_of(self, node: Node) -> list[str]:
        return [plan for plan, nodes in self.plans.items() if node in nodes]

    def teacher_of(self, node: Node) -> str:
        if node.teacher_model is None:
            return "-"
        if isinstance(node.teacher_model, Node):
            shown = self.name(node.teacher_model)
        else:
            shown = f"{node.teacher} ({node.teacher_model.path})"
        return shown + (" [cached signals]" if "signals" in node.inputs else "")


def model_label(model: str) -> str:
    return model if model == STUDENT else f"teacher-{model}"


def digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def placeholder(node: Node) -> str:
    return f"@{node.hash}"


def real_path(node: Node) -> str:
    return str(node.output)


@dataclass(frozen=True)
class Origin:
    """Where a model starts: its source in the recipe, whether that is ready as it is, and the recipe field."""

    source: ModelSource
    ready: bool
    where: str


def origin(recipe: Recipe, model: str) -> Origin:
    """The origin of the Student or of a Teacher, by its name in the recipe or its label (`teacher-<name>`)."""
    if model == STUDENT:
        return Origin(recipe.student, False, "student")
    name = model.removeprefix("teacher-")
    teacher = recipe.teacher(name)
    return Origin(teacher.model, teacher.ready, f"teachers.{recipe.chain.index(name)}.model")


@dataclass(frozen=True)
class TeacherInput:
    """The Teacher of a distilling stage: its name in the chain, the model it is, and its cached signals if any."""

    name: str
    model: Node | ModelSource
    signals: Node | None = None


class Expander:
    def __init__(self, recipe: Recipe, source: Path):
        self.recipe = recipe
        self.source = source
        self.nodes: dict[str, Node] = {}
        self.routes: dict[tuple[str, str], Route] = {}
        self.expanding: list[tuple[str, str]] = []
        self.missing: dict[str, str] = {}          # missing path -> the line naming it (the first field to read it)

    def absent(self, path: object, line: str) -> dict[str, str]:
        """Note a missing input; its stand-in fingerprint (the stage hashes change once the input exists)."""
        self.missing.setdefault(str(path), line)
        return {"missing": str(path)}

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {message}")

    def origin(self, model: str) -> Origin:
        return origin(self.recipe, model)

    def route(self, plan: str, model: str) -> Route:
        key = (plan, model)
        if key in self.routes:
            return self.routes[key]
        if key in self.expanding:
            cycle = " -> ".join(name for _, name in self.expanding[self.expanding.index(key):])
            raise self.error(f"plan {plan}: models distil from each other in a circle: {cycle} -> {model}")
        self.expanding.append(key)
        self.routes[key] = self._route(plan, model)
        self.expanding.pop()
        return self.routes[key]

    def _route(self, plan: str, model: str) -> Route:
        origin = self.origin(model)
        schedule = distils_from(plan, self.recipe.chain).get(model, ())
        stages: list[Node] = []
        current: Node | ModelSource = origin.source
        for template in self.recipe.stages:
            fields, extra = self.settings(plan, model, template)
            teachers = extra.get("teachers", schedule) if schedule and template.kind == "distill" else ()
            if not teachers:
                kind = extra.get("without_kd", "skip") if template.kind == "distill" else template.kind
                if not origin.ready and kind != "skip":
                    fields = without_distillation(fields, kind) if template.kind == "distill" else fields
                    current = self.stage(plan, model, template.name, fields, current)
                    stages.append(current)
                continue
            for name, budget in zip(teachers, self.budgets(plan, model, template, fields, extra, len(teachers)),
                                    strict=True):
                teacher_route = self.route(plan, name)
                stages += teacher_route.stages
                teacher = TeacherInput(name, teacher_route.final)
                if extra.get("signals") == "cached":
                    teacher = TeacherInput(name, teacher.model, self.signals(teacher, fields, extra.get("top_k",
                                                                                                       DEFAULT_TOP_K)))
                    stages.append(teacher.signals)
                current = self.stage(plan, model, f"{template.name}-from-{name}", fields | budget, current, teacher)
                stages.append(current)
        if current is origin.source and not origin.ready:
            raise self.error(f"plan {plan}: {model_label(model)} has no stage to run (every template stage "
                             "distils and has without_kd: skip)")
        return Route(tuple(stages), current)

    def budgets(self, plan: str, model: str, template: StageTemplate, fields: dict, extra: dict,
                n_teachers: int) -> list[dict]:
        """Per Teacher distilled from: the step count (and schedule window) of that distillation."""
        if extra.get("budget", "per-teacher") == "per-teacher":
            if extra.get("chain_schedule", "fresh") != "fresh":
                raise self.error(f"stage {template.name}: chain_schedule: continued needs budget: per-plan")
            return [{}] * n_teachers
        total = fields.get("max_steps")
        if total is None or total < n_teachers:
            raise self.error(f"plan {plan}, stage {model_label(model)}/{template.name}: budget: per-plan splits "
                             f"max_steps over {n_teachers} Teacher(s); give max_steps >= {n_teachers}")
        steps = split_steps(total, n_teachers)
        if extra.get("chain_schedule", "fresh") == "fresh":
            return [{"max_steps": n} for n in steps]
        starts = [sum(steps[:index]) for index in range(n_teachers)]
        return [{"max_steps": n, "schedule_window": {"start": start, "total": total}}
                for n, start in zip(steps, starts, strict=True)]

    def settings(self, plan: str, model: str, template: StageTemplate) -> tuple[dict, dict]:
        """The stage's StageConfig fields and cascade fields: defaults, then the template, then the overrides."""
        fields = template_fields(self.recipe, template)
        extra = template.cascade_fields()
        for override in self.recipe.overrides:
            if override.selects(plan, model, template.name):
                fields = deep_merge(fields, override.set.stage_fields())
                extra |= override.set.cascade_fields()
        return fields, extra

    def model_reference(self, model: Node | ModelSource, of: str, path_of) -> dict:
        """A ModelSource: the recipe's own, or the output of a stage (in the dtype of the model `of`)."""
        if isinstance(model, Node):
            return {"path": path_of(model), "dtype": self.origin(of).source.dtype}
        return model.model_dump(mode="json", exclude_none=True)

    def external_files(self, model: Node | ModelSource, of: str, role: str) -> dict[str, object]:
        """The fingerprints of a recipe model's folders, keyed by the role they play in the stage (`model`,
        `teacher`), not by where the recipe names them: a Teacher is the same input wherever it stands in a chain."""
        return {} if isinstance(model, Node) else self.source_files(model, self.origin(of).where, role)

    def stage(self, plan: str, model: str, step: str, fields: dict, start: Node | ModelSource,
              teacher: TeacherInput | None = None) -> Node:
        def config(path_of) -> dict:
            data = fields | {"model": self.model_reference(start, model, path_of)}
            if teacher is not None and teacher.signals is not None:
                data["teacher"] = {"kind": "cached", "path": path_of(teacher.signals)}
            elif teacher is not None:
                teacher_model = self.model_reference(teacher.model, teacher.name, path_of)
                data["teacher"] = {"kind": "online", "model": teacher_model}
            return data

        label = f"{model_label(model)}/{step}"
        try:
            identity = StageConfig.model_validate(config(placeholder) | {"output_dir": "."}).identity()
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise self.error(f"plan {plan}, stage {label}: {problems}") from None
        upstream = (("model", start), ("teacher", teacher and teacher.model), ("signals", teacher and teacher.signals))
        inputs = {role: node for role, node in upstream if isinstance(node, Node)}
        files = self.data_files(DataConfig.model_validate(fields["data"]), f"stage {label}")
        files |= self.external_files(start, model, "model")
        if teacher is not None:
            files |= self.external_files(teacher.model, teacher.name, "teacher")
        hash_ = digest({"job": "stage", "model": model_label(model), "config": identity, "files": files})
        directory = self.recipe.stage_root / "stages" / model_label(model) / f"{step}-{hash_[:10]}"
        job = StageConfig.model_validate(config(real_path) | {"output_dir": directory})
        distilled = teacher is not None or any(node.distilled for node in inputs.values())
        return self.register(Node(model_label(model), step, hash_, job, directory, inputs, files,
                                  teacher and teacher.name, teacher and teacher.model, distilled))

    def signals(self, teacher: TeacherInput, fields: dict, top_k: int) -> Node:
        reader = probe_config(fields, self.recipe.student, "cached")   # the distill stage that reads the signals
        data = reader.data
        step = f"signals-{data.conversations.stem}"
        files = self.data_files(data, f"stage {step}")
        files |= self.external_files(teacher.model, teacher.name, "teacher")
        identity = {"teacher": self.model_reference(teacher.model, teacher.name, placeholder),
                    "images": str(data.images), "max_length": data.max_length, "top_k": top_k}
        hash_ = digest({"job": "signals", **identity, "files": files})
        directory = self.recipe.stage_root / "signals" / model_label(teacher.name) / f"{step}-{hash_[:10]}"
        teacher_source = ModelSource.model_validate(self.model_reference(teacher.model, teacher.name, real_path))
        job = SignalsJob(teacher_source, data.conversations, data.images, data.max_length, top_k, reader.batch_size,
                         directory / "signals")
        inputs = {"teacher": teacher.model} if isinstance(teacher.model, Node) else {}
        distilled = isinstance(teacher.model, Node) and teacher.model.distilled
        return self.register(Node(model_label(teacher.name), step, hash_, job, directory, inputs, files,
                                  teacher.name, teacher.model, distilled))

    def register(self, node: Node) -> Node:
        return self.nodes.setdefault(node.hash, node)

    def data_files(self, data: DataConfig, where: str) -> dict[str, object]:
        """The conversation file's sha256 and the fingerprint of the images it names; missing ones noted."""
        path = data.conversations
        conversations = (file_sha256(path) if path.is_file()
                         else self.absent(path, f"{where}: data.conversations: file not found: {path}"))
        if data.images is not None and not Path(data.images).is_dir():
            self.absent(data.images, f"{where}: data.images: folder not found: {data.images}")
        if not path.is_file():
            return {"data.conversations": conversations}
        return {"data.conversations": conversations, "data.images": images_of(path, data.images)}

    def source_files(self, source: ModelSource, where: str, role: str) -> dict[str, object]:
        """Fingerprints of a model source's local folders under `role.field`; a hub id stands for itself. `where`:
        the recipe field that names the source, for the message when a folder is missing."""
        files = {}
        for field in ("path", "vision", "llm", "tokenizer", "vision_init"):
            value = getattr(source, field)
            if value is None:
                continue
            folder = Path(value)
            if folder.is_dir():
                files[f"{role}.{field}"] = folder_files(folder)
            elif field in ("tokenizer", "vision_init") or not HUB_ID.match(str(value)):
                files[f"{role}.{field}"] = self.absent(value, f"{where}.{field}: folder not found: {value}")
            else:
                files[f"{role}.{field}"] = str(value)
        return files


def split_steps(total: int, parts: int) -> list[int]:
    """`total` steps in `parts` near-equal parts, the first ones one step longer where it does not divide."""
    return [total // parts + (index < total % parts) for index in range(parts)]


def student_last(nodes) -> tuple[Node, ...]:
    """Unique nodes, Teachers' stages before the Student's: a valid order, as no Teacher builds on the Student."""
    return tuple(sorted(dict.fromkeys(nodes), key=lambda node: node.model == STUDENT))


def stage_names(stages: tuple[Node, ...], plans: dict[str, tuple[Node, ...]]) -> dict[str, str]:
    """`<model>/<step>`, prefixed by the plans using it when it distils or the plain name is ambiguous."""
    same_label = Counter((node.model, node.step) for node in stages)
    names = {}
    for node in stages:
        name = f"{node.model}/{node.step}"
        if node.distilled or same_label[node.model, node.step] > 1:
            name = "+".join(plan for plan, nodes in plans.items() if node in nodes) + "/" + name
        names[node.hash] = name
    return names


def expand(recipe: Recipe, source: Path, download: bool = False) -> Cascade:
    """The recipe's stages, and every input it names that is not there (models, tokenizers, data, evaluation
    data) in `Cascade.missing`: a stage whose input is missing has a provisional hash. `download`: the configs of
    hub ids not in the local cache may be fetched (to count a Teacher's capacity)."""
    capacities, missing = chain_capacities(recipe, source, download)
    expander = Expander(recipe, source)
    if recipe.evaluation and not recipe.evaluation.data.is_dir():
        expander.absent(recipe.evaluation.data, f"evaluation.data: folder not found: {recipe.evaluation.data}")
    routes = {plan: expander.route(plan, STUDENT) for plan in recipe.plans}
    stages = student_last(node for route in routes.values() for node in route.stages)
    plans = {plan: tuple(node for node in stages if node in route.stages) for plan, route in routes.items()}
    students = {plan: route.final for plan, route in routes.items()}
    missing += [line for line in expander.missing.values() if line not in missing]
    return Cascade(recipe, source, capacities, stages, plans, students, stage_names(stages, plans), tuple(missing))


def require_inputs(cascade: Cascade) -> Cascade:
    """The cascade, when every input it names is there; else a ConfigError naming each missing one."""
    if cascade.missing:
        raise ConfigError(f"{cascade.source}: missing input(s):\n" + "\n".join(f"  {line}" for line in cascade.missing))
    return cascade
