"""A cascade recipe, read from one YAML file: the Student, the chain of Teachers, the stage template, the plans.

    output: runs/cascade                  # cascade.json, results.md, and (without `store`) every stage's folder
    store: runs/store                     # optional: where stage folders go; recipes sharing it share stages
    student: {preset: tiny-student, tokenizer: data/tokenizer}      # any model source
    teachers:                             # the chain, smallest first
      - {name: tiny-ta, model: {preset: tiny-ta, tokenizer: data/tokenizer}}
      - {name: big, model: {path: checkpoints/teacher}, capacity: 7000000000}   # a ready checkpoint
    defaults: {data: {...}, batch_size: 32}                          # StageConfig fields of every stage
    stages:                               # the template every model follows
      - {name: pretrain, kind: pretrain, max_steps: 150}
      - {name: sft, kind: sft}
      - {name: dft, kind: distill, losses: {...}, signals: online}
    plans: [none, direct, top-down, bottom-up]
    overrides:                            # StageConfig or cascade fields for some stages
      - {stage: dft, plan: direct, model: student, set: {max_steps: 600}}
    evaluation: {benchmark: synthetic, data: data/test}

A template stage is a partial StageConfig (the cascade sets `model`, `output_dir` and `teacher`) plus the cascade
fields of `StageSettings` (signals, top_k, teachers, without_kd, budget, chain_schedule); `llava-ckd options recipe`
lists every field with its help.
Overrides apply in their order to the stages they select (`stage`, and optionally `plan` and `model`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, create_model, field_validator

from llava_ckd.cascade.plans import STUDENT, PlanName
from llava_ckd.config import DISTILL_FIELDS, ConfigError, StageConfig, Strict, read_yaml, validate
from llava_ckd.eval.registry import benchmark_names
from llava_ckd.models.source import ModelSource

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SET_BY_CASCADE = ("model", "output_dir", "teacher")
STAGE_FIELDS = tuple(name for name in StageConfig.model_fields if name not in SET_BY_CASCADE)
CASCADE_FIELDS = ("signals", "top_k", "teachers", "without_kd", "budget", "chain_schedule")

# Every StageConfig field the recipe may set, unchecked here: whole stages are validated once assembled.
StageFields = create_model(
    "StageFields",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **{name: (Any, Field(None, description=StageConfig.model_fields[name].description)) for name in STAGE_FIELDS},
)


class StageSettings(StageFields):
    model_config = ConfigDict(use_attribute_docstrings=True)

    signals: Literal["online", "cached"] | None = None
    """online (default): the Teacher runs beside the Student; cached: its top-k signals are written first."""
    top_k: int | None = Field(None, ge=1)
    """Tokens kept per position in cached signals."""
    teachers: tuple[str, ...] | None = None
    """Which Teachers this stage distils from, replacing the plan's order where it distils."""
    without_kd: Literal["skip", "pretrain", "sft"] | None = None
    """What the stage becomes where nothing is distilled (Teachers' own training, plan `none`): skip (default),
    pretrain or sft; LLaVA-KD's DPT is `kind: distill, without_kd: pretrain`."""
    budget: Literal["per-teacher", "per-plan"] | None = None
    """per-teacher (default, the paper's layout): each distillation runs `max_steps`; per-plan: `max_steps` is the
    model's in this stage in every plan, split evenly over its Teachers in chain order (the first get the
    remainder), so every plan trains the Student equally long."""
    chain_schedule: Literal["fresh", "continued"] | None = None
    """With budget per-plan: fresh (default), each distillation warms up and decays on its own; continued, one
    model's distillations run consecutive windows of one schedule over `max_steps`."""

    @field_validator("teachers")
    @classmethod
    def _someone(cls, teachers: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if teachers is not None and not teachers:
            raise ValueError("an empty list distils from nobody, which would make every plan train this stage "
                             "like `none`; name at least one Teacher, or leave the field out")
        return teachers

    def stage_fields(self) -> dict:
        return {name: getattr(self, name) for name in STAGE_FIELDS if name in self.model_fields_set}

    def cascade_fields(self) -> dict:
        return {name: getattr(self, name) for name in CASCADE_FIELDS if name in self.model_fields_set}


class StageTemplate(StageSettings):
    name: str = Field(pattern=NAME_PATTERN)
    """The stage's name in stage folders, overrides and reports."""
    kind: Literal["pretrain", "sft", "distill"]
    """As a stage's `kind`."""


class TeacherSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    """The Teacher's name in plans, stage folders and reports."""
    model: ModelSource
    """A ready checkpoint (`path`), used as it is; a preset or a composition is trained with the stage template."""
    capacity: int | None = Field(None, gt=0)
    """Parameters; counted from the model when not given."""

    @field_validator("name")
    @classmethod
    def _not_student(cls, name: str) -> str:
        if name == STUDENT:
            raise ValueError(f"{STUDENT!r} names the Student; give the Teacher another name")
        return name

    @property
    def ready(self) -> bool:
        """A checkpoint is used as it is; a preset or a composition is trained with the stage template."""
        return self.model.path is not None


class Override(Strict):
    stage: str
    """The template stage it changes."""
    plan: PlanName | None = None
    """Only in this plan (default: every plan)."""
    model: str | None = None
    """Only for this model: `student` or a Teacher's name (default: every model)."""
    set: StageSettings
    """Stage fields or the cascade fields of `stages[]` to set."""

    def selects(self, plan: str, model: str, stage: str) -> bool:
        return self.stage == stage and self.plan in (None, plan) and self.model in (None, model)


class Evaluation(Strict):
    benchmark: str
    """The benchmark's name (`llava-ckd score --help` lists them)."""
    data: Path
    """The benchmark's folder; results are reported on it."""
    val: Path | None = None
    """A validation split, for choices and checks (a study's plateau check)."""
    batch_size: int = Field(16, ge=1)
    """Questions per generation batch."""
    metric: str = "accuracy"
    """The score's field that results tables and studies report."""

    def answers_folder(self, data: Path) -> str:
        """The folder name of a model's answers on `data`: the benchmark's name, with `-val` on the val split (a
        recipe that reports on val itself, for a probe, shares those answers with the recipe that reports on test)."""
        on_val = self.val is not None and Path(data).resolve() == Path(self.val).resolve()
        return self.benchmark + ("-val" if on_val else "")


class Recipe(Strict):
    output: Path
    """cascade.json, results.md, and (without `store`) every stage's folder."""
    store: Path | None = None
    """Where stage folders go; recipes sharing a store share their stages."""
    student: ModelSource
    """The Student's model source."""
    teachers: tuple[TeacherSpec, ...] = Field(min_length=1)
    """The chain, smallest first."""
    defaults: StageFields = StageFields()
    """Stage fields (`llava-ckd options stage`) of every stage; the distillation fields only where a stage
    distils."""
    stages: tuple[StageTemplate, ...] = Field(min_length=1)
    """The template every model follows: each entry stage fields (`llava-ckd options stage`, less model,
    output_dir and teacher, which the cascade sets) and the fields below."""
    plans: tuple[PlanName, ...] = Field(min_length=1)
    """none, direct, top-down (TAKD), bottom-up (CKD)."""
    overrides: tuple[Override, ...] = ()
    """Changes to some stages, applied in their order."""
    evaluation: Evaluation | None = None
    """How each plan's Student is evaluated."""

    @property
    def stage_root(self) -> Path:
        return self.store or self.output

    @property
    def chain(self) -> tuple[str, ...]:
        return tuple(teacher.name for teacher in self.teachers)

    def teacher(self, name: str) -> TeacherSpec:
        return next(teacher for teacher in self.teachers if teacher.name == name)


def _duplicates(names) -> list[str]:
    return sorted(name for name, count in Counter(names).items() if count > 1)


def reference_problems(recipe: Recipe) -> list[str]:
    """Names that point nowhere or twice, cascade fields on stages that do not distil, an unknown benchmark."""
    problems = []
    chain, stages = recipe.chain, {stage.name: stage for stage in recipe.stages}
    known_teachers = f"the chain has {', '.join(chain)}"
    for field, names in (("teachers", chain), ("stages", [s.name for s in recipe.stages]), ("plans", recipe.plans)):
        if duplicates := _duplicates(names):
            problems.append(f"{field}: {', '.join(duplicates)} appear(s) more than once")

    def check_settings(where: str, settings: StageSettings, stage: StageTemplate) -> None:
        for index, name in enumerate(settings.teachers or ()):
            if name not in chain:
                problems.append(f"{where}.teachers.{index}: unknown Teacher {name!r}; {known_teachers}")
        if settings.teachers and _duplicates(settings.teachers):
            problems.append(f"{where}.teachers: a Teacher appears more than once")
        if stage.kind != "distill" and (misplaced := settings.cascade_fields()):
            problems.append(f"{where}: {', '.join(misplaced)}: only a distill stage takes these fields "
                            f"(stage {stage.name!r} is {stage.kind})")

    for index, stage in enumerate(recipe.stages):
        check_settings(f"stages.{index}", stage, stage)
    for index, override in enumerate(recipe.overrides):
        where = f"overrides.{index}"
        if override.stage not in stages:
            problems.append(f"{where}.stage: no stage {override.stage!r}; the template has {', '.join(stages)}")
            continue
        if override.model not in (None, STUDENT, *chain):
            problems.append(f"{where}.model: unknown model {override.model!r}; give {STUDENT!r} or a Teacher "
                            f"({known_teachers})")
        if "kind" in override.set.model_fields_set:
            problems.append(f"{where}.set.kind: an override cannot change a stage's kind")
        check_settings(f"{where}.set", override.set, stages[override.stage])
    if recipe.evaluation and recipe.evaluation.benchmark not in benchmark_names():
        problems.append(f"evaluation.benchmark: unknown benchmark {recipe.evaluation.benchmark!r}; "
                        f"known: {', '.join(benchmark_names())}")
    return problems


def deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        both_mappings = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = deep_merge(merged[key], value) if both_mappings else value
    return merged


def template_fields(recipe: Recipe, template: StageTemplate) -> dict:
    """The defaults (less the distillation fields, for a stage that does not distil), then the template's fields."""
    defaults = recipe.defaults.model_dump(exclude_unset=True)
    if template.kind != "distill":
        defaults = {name: value for name, value in defaults.items() if name not in DISTILL_FIELDS}
    return deep_merge(defaults, template.stage_fields())


def probe_config(fields: dict, student: ModelSource, signals: str | None) -> StageConfig:
    """Validate stage fields as a whole StageConfig, with stand-ins for what the cascade fills in."""
    stand_ins: dict = {"model": student.model_dump(mode="json"), "output_dir": "."}
    if fields.get("kind") == "distill":
        stand_ins["teacher"] = ({"kind": "cached", "path": "."} if signals == "cached"
                                else {"kind": "online", "model": stand_ins["model"]})
    return StageConfig.model_validate(fields | stand_ins)


def without_distillation(fields: dict, kind: str) -> dict:
    return {name: value for name, value in fields.items() if name not in DISTILL_FIELDS} | {"kind": kind}


def stage_problems(recipe: Recipe) -> list[str]:
    """Each template stage, and each override applied to it, checked as a StageConfig."""
    problems = []
    stages = {stage.name: stage for stage in recipe.stages}
    settings_to_check = [(f"stages.{index}", stage, stage) for index, stage in enumerate(recipe.stages)]
    settings_to_check += [(f"overrides.{index}.set", override.set, stages[override.stage])
                          for index, override in enumerate(recipe.overrides)]
    for where, settings, stage in settings_to_check:
        fields = deep_merge(template_fields(recipe, stage), settings.stage_fields())
        signals = settings.signals or stage.signals
        variants = [fields]
        if stage.kind == "distill" and (settings.without_kd or stage.without_kd or "skip") != "skip":
            variants.append(without_distillation(fields, settings.without_kd or stage.without_kd))
        for variant in variants:
            try:
                probe_config(variant, recipe.student, signals)
            except ValidationError as error:
                problems += [f"{'.'.join([where, *map(str, e['loc'])])}: {e['msg']}" for e in error.errors()]
    return problems


def load_recipe(path: Path) -> Recipe:
    """The recipe in `path`, checked through: fields, names, and every stage as a StageConfig (files: see expand)."""
    path = Path(path)
    recipe = validate(Recipe, read_yaml(path), path)
    problems = reference_problems(recipe)
    if not problems:
        problems = stage_problems(recipe)
    if problems:
        raise ConfigError(f"{path}: invalid recipe\n" + "\n".join(f"  {problem}" for problem in problems))
    return recipe
