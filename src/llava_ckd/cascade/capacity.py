"""Teacher capacities (parameter counts) without loading weights, and the check that the chain ascends.

A checkpoint folder is counted from its safetensors headers; a preset, a composition or a hub id from its
config, instantiated on the meta device (no memory, no weights, nothing downloaded: `models/shapes.py`).
"""

from __future__ import annotations

import json
import re
import struct
from itertools import pairwise
from pathlib import Path

import torch

from llava_ckd.cascade.recipe import Recipe
from llava_ckd.config import ConfigError
from llava_ckd.models.shapes import shape_of
from llava_ckd.models.source import ModelSource

HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def safetensors_parameters(file: Path, part: str = "") -> int:
    """Parameters in a safetensors file (those whose names contain `part`), read from its header alone."""
    with open(file, "rb") as stream:
        (header_size,) = struct.unpack("<Q", stream.read(8))
        header = json.loads(stream.read(header_size))
    shapes = [entry["shape"] for name, entry in header.items() if name != "__metadata__" and part in name]
    return sum(int(torch.Size(shape).numel()) for shape in shapes)


def llm_parameters(folder: Path) -> int:
    """Parameters of the language model of a saved single-file VLM (LLaVA's `language_model`)."""
    return safetensors_parameters(Path(folder) / "model.safetensors", "language_model")


def checkpoint_parameters(folder: Path) -> int | None:
    """Parameters of a saved checkpoint folder, from its safetensors headers (None: it has none)."""
    if (folder / "model.safetensors.index.json").is_file():
        shards = set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values())
        return sum(safetensors_parameters(folder / shard) for shard in shards)
    if (folder / "model.safetensors").is_file():
        return safetensors_parameters(folder / "model.safetensors")
    return None


def parameter_count(source: ModelSource, download: bool = False) -> int:
    """A checkpoint's from its weights' headers; any other model's (or a checkpoint without safetensors) from its
    config on the meta device (`models.shapes.shape_of`; a hub id's config from the hub if `download`)."""
    if source.path is not None:
        folder = Path(source.path)
        if not folder.is_dir() and not HUB_ID.match(source.path):
            raise FileNotFoundError(f"no checkpoint folder {source.path}")
        if (counted := checkpoint_parameters(folder)) is not None:
            return counted
    return shape_of(source, download).total


def chain_capacities(recipe: Recipe, source: Path | str, download: bool = False
                     ) -> tuple[dict[str, int | None], list[str]]:
    """Each Teacher's capacity (stated, or counted; None where it cannot be counted yet) and a line for each that
    cannot; refuses a chain not listed in strictly ascending capacity. `download`: hub ids' configs may be fetched."""
    capacities, missing = {}, []
    for index, teacher in enumerate(recipe.teachers):
        if teacher.capacity is not None:
            capacities[teacher.name] = teacher.capacity
            continue
        try:
            capacities[teacher.name] = parameter_count(teacher.model, download)
        except (OSError, ValueError) as error:
            capacities[teacher.name] = None
            missing.append(f"teachers.{index}.model: cannot count the parameters of Teacher {teacher.name!r}: "
                           f"{error}")
    for smaller, larger in pairwise(recipe.teachers):
        if None in (capacities[smaller.name], capacities[larger.name]):
            continue
        if capacities[smaller.name] >= capacities[larger.name]:
            raise ConfigError(
                f"{source}: teachers: the chain must be listed smallest first, but {smaller.name!r} "
                f"({capacities[smaller.name]:,} parameters, {_origin(smaller.capacity)}) is not smaller than "
                f"{larger.name!r} ({capacities[larger.name]:,}, {_origin(larger.capacity)})")
    return capacities, missing


def _origin(stated: int | None) -> str:
    return "counted" if stated is None else "stated"
