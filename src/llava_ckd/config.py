"""Typed configuration read from YAML, with errors that name the file and the field."""

from __future__ import annotations

from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.terms import (
    CACHED_SIGNALS,
    AnyTerm,
    CrossEntropy,
    ResponseKD,
    loss_terms,
    term_named,
    unmet_needs,
)
from llava_ckd.errors import UserError
from llava_ckd.models.parts import PARTS
from llava_ckd.models.source import ModelSource, Strict
from llava_ckd.options import hint, options


@cache
def installed(package: str) -> bool:
    """Whether a tracker's package (named as the tracker) is importable; asked once per process."""
    return find_spec(package) is not None


class ConfigError(UserError, ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


class DataConfig(Strict):
    conversations: Path
    """LLaVA conversation records: a .json list or a .jsonl file."""
    images: Path | None = None
    """The folder the records' `image` names are read from (none: text-only records)."""
    max_length: int = Field(2048, ge=1)
    """Tokens per sample; longer samples are cut, and skipped when no answer token is left."""


class OnlineTeacherConfig(Strict):
    """A Teacher run next to the Student at every step."""

    kind: Literal["online"]
    model: ModelSource
    """The Teacher's model source."""


class CachedTeacherConfig(Strict):
    """Top-k Teacher signals written beforehand by `llava-ckd cache-teacher`."""

    kind: Literal["cached"]
    path: Path
    """The folder `llava-ckd cache-teacher` wrote."""


TeacherConfig = Annotated[OnlineTeacherConfig | CachedTeacherConfig, Field(discriminator="kind")]


class ScheduleWindow(Strict):
    """This stage runs steps [start, start + max_steps) of one learning-rate schedule spanning `total` steps,
    so that a chain of stages (bottom-up's distillations) follows one warm-up and one decay."""

    start: int = Field(ge=0)
    """The schedule's step this stage starts at."""
    total: int = Field(ge=1)
    """The schedule's length over every stage of the chain."""
DISTILL_FIELDS = ("teacher", "losses", "divergence", "kd_chunk_size")
NOT_IDENTITY = ("output_dir", "report_to")
"""Fields that say where a stage writes and reports, not what it trains."""


class StageConfig(Strict):
    """One training stage: which model, which data, which parts train, and how."""

    kind: Literal["pretrain", "sft", "distill"]
    """pretrain: the projector on captions; sft: projector and LLM on instructions; distill: CE plus KD."""
    model: ModelSource
    """The model this stage trains (the Student in a distill stage)."""
    data: DataConfig
    """The conversations, their images and the sample length."""
    output_dir: Path
    """Where the stage writes its checkpoints, final model, log and data report."""
    train: tuple[str, ...] | None = None
    """The parts that train: vision, projector, llm (default: projector for pretrain, projector and llm else)."""
    learning_rate: float = Field(2e-5, gt=0)
    """The schedule's peak learning rate (AdamW)."""
    batch_size: int = Field(8, ge=1)
    """Samples per device per micro-batch."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimizer step; every loss term is normalised over them."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the data, when `max_steps` is not given."""
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps; overrides `epochs`."""
    schedule: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """The learning-rate schedule after warm-up."""
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    """The share of the steps spent warming up."""
    schedule_window: ScheduleWindow | None = None
    """Run one window of a longer schedule (bottom-up's chained distillations on one schedule)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW's weight decay."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision of the training step; an online Teacher runs in it too."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    seed: int = Field(0, ge=0)
    """Seeds initialisation, data order and dropout."""
    save_steps: int = Field(500, ge=1)
    """A resumable checkpoint every this many steps."""
    save_total_limit: int = Field(2, ge=1)
    """Checkpoints kept."""
    logging_steps: int = Field(10, ge=1)
    """Steps between log lines (and TensorBoard points)."""
    report_to: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = ("tensorboard",)
    """Experiment trackers the Trainer logs to, each given the stage's input fingerprints: tensorboard (OUTPUT/runs/),
    wandb and mlflow (pip install ".[trackers]"; their own settings apply, e.g. WANDB_MODE=offline,
    MLFLOW_TRACKING_URI); [] for none. Not part of the stage's identity: changing it reuses the finished stage."""
    dataloader_workers: int = Field(0, ge=0)
    """Processes loading batches (0: in the training process)."""
    teacher: TeacherConfig | None = None
    """distill only: {kind: online, model: SOURCE} runs beside the Student; {kind: cached, path: DIR} reads
    top-k signals."""
    losses: tuple[AnyTerm, ...] = (CrossEntropy(), ResponseKD())
    """distill only: the loss terms, [{term: NAME, weight: W, ...}] (or the mapping {NAME: W}); see distill/terms.py."""
    divergence: DivergenceSpec = DivergenceSpec()
    """distill only: the divergence of every KD term that does not name its own."""
    kd_chunk_size: int = Field(256, ge=1)
    """distill only: positions per chunk of the fused LM-head losses (memory against passes)."""

    @field_validator("losses", mode="before")
    @classmethod
    def _losses(cls, losses: object) -> tuple:
        return loss_terms(losses)

    @model_validator(mode="after")
    def _parts(self) -> StageConfig:
        if self.train is not None and not set(self.train) <= set(PARTS):
            raise ValueError(f"train: unknown part in {list(self.train)}; choose from {', '.join(PARTS)}")
        return self

    @model_validator(mode="after")
    def _distillation(self) -> StageConfig:
        if self.kind != "distill":
            misplaced = [name for name in DISTILL_FIELDS if name in self.model_fields_set]
            if misplaced:
                raise ValueError(f"{', '.join(misplaced)}: only a distill stage takes these fields")
            return self
        if self.teacher is None:
            raise ValueError("teacher: a distill stage needs a teacher ({kind: online, model: ...} "
                             "or {kind: cached, path: ...})")
        if isinstance(self.teacher, CachedTeacherConfig):
            unmet = unmet_needs(self.losses, CACHED_SIGNALS)
            if unmet:
                raise ValueError(f"losses: {unmet}, which cached signals do not hold: use an online teacher, "
                                 "or leave the term out")
            response = term_named(self.losses, "response_kd")
            divergence = (response and response.divergence) or self.divergence
            if divergence.name != "forward_kl" or divergence.temperature != 1.0:
                raise ValueError("divergence: a cached teacher holds top-k probabilities at temperature 1, "
                                 "which give forward_kl at temperature 1 only")
        return self

    @field_validator("report_to")
    @classmethod
    def _installed(cls, report_to: tuple[str, ...]) -> tuple[str, ...]:
        if missing := [name for name in report_to if not installed(name)]:
            raise ValueError(f"{', '.join(missing)} not installed (pip install {' '.join(missing)}), or leave it out")
        return report_to

    @model_validator(mode="after")
    def _window(self) -> StageConfig:
        window = self.schedule_window
        if window is not None and (self.max_steps is None or window.start + self.max_steps > window.total):
            raise ValueError(f"schedule_window: needs max_steps with start + max_steps <= total "
                             f"(start {window.start}, max_steps {self.max_steps}, total {window.total})")
        return self

    @property
    def trained_parts(self) -> tuple[str, ...]:
        """pretrain trains the projector alone; sft the projector and the LLM, unless `train` says otherwise."""
        if self.train is not None:
            return self.train
        return ("projector",) if self.kind == "pretrain" else ("projector", "llm")

    def resolved(self) -> dict:
        """The config as plain data, without the distillation fields when the stage does not distil."""
        return self.model_dump(mode="json", exclude=None if self.kind == "distill" else set(DISTILL_FIELDS))

    def identity(self) -> dict:
        """What decides the stage's result: the resolved config less where it writes and reports."""
        return {name: value for name, value in self.resolved().items() if name not in NOT_IDENTITY}


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`key.sub=value` strings (value parsed as YAML) applied onto a nested dict."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep:
            raise ConfigError(f"override {override!r} is not KEY=VALUE")
        *parents, leaf = key.split(".")
        node = data
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(raw)
    return data


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def validate(model: type[BaseModel], data: dict, source: Path | str):
    try:
        return model.model_validate(data)
    except ValidationError as error:
        rows = options(model)
        problems = "\n".join(
            f"  {location or '(top level)'}: {e['msg']}{hint(rows, location, e['type'])}"
            for e in error.errors() for location in ['.'.join(str(part) for part in e['loc'])]
        )
        raise ConfigError(f"{source}: invalid configuration\n{problems}") from None


def load_stage_config(path: Path, overrides: list[str] = ()) -> StageConfig:
    return validate(StageConfig, apply_overrides(read_yaml(Path(path)), list(overrides)), path)
