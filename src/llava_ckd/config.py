"""Typed configuration read from YAML, with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from llava_ckd.models.parts import PARTS
from llava_ckd.models.presets import PRESETS


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(Strict):
    """Exactly one of: a checkpoint (`path`), a composition (`vision` + `llm`), or a tiny `preset`."""

    path: str | None = None
    vision: str | None = None
    llm: str | None = None
    vision_feature_layer: int = -2
    preset: str | None = None
    tokenizer: Path | None = None
    vision_init: Path | None = None
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        sources = [self.path is not None, self.vision is not None or self.llm is not None, self.preset is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of: path, vision + llm, preset")
        if (self.vision is None) != (self.llm is None):
            raise ValueError("composition needs both vision and llm")
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
            if self.tokenizer is None:
                raise ValueError("a preset needs a tokenizer folder")
        elif self.vision_init is not None:
            raise ValueError("vision_init applies to presets only")
        return self


class DataConfig(Strict):
    conversations: Path
    images: Path | None = None
    max_length: int = 2048


class StageConfig(Strict):
    """One training stage: which model, which data, which parts train, and how."""

    kind: Literal["pretrain", "sft"]
    model: ModelSource
    data: DataConfig
    output_dir: Path
    train: tuple[str, ...] | None = None
    learning_rate: float = 2e-5
    batch_size: int = 8
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None
    schedule: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    dataloader_workers: int = 0

    @model_validator(mode="after")
    def _parts(self) -> StageConfig:
        if self.train is not None and not set(self.train) <= set(PARTS):
            raise ValueError(f"train: unknown part in {list(self.train)}; choose from {', '.join(PARTS)}")
        return self

    @property
    def trained_parts(self) -> tuple[str, ...]:
        """pretrain trains the projector alone; sft the projector and the LLM, unless `train` says otherwise."""
        if self.train is not None:
            return self.train
        return ("projector",) if self.kind == "pretrain" else ("projector", "llm")


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
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(f"{source}: invalid configuration\n{problems}") from None


def load_stage_config(path: Path, overrides: list[str] = ()) -> StageConfig:
    return validate(StageConfig, apply_overrides(read_yaml(Path(path)), list(overrides)), path)
