"""Teacher capacities (parameter counts) without loading weights, and the check that the chain ascends.

A checkpoint folder is counted from its safetensors headers; a preset, a composition or a hub id from its
config, instantiated on the meta device (no memory, no weights).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    LlavaForConditionalGeneration,
)

from llava_ckd.cascade.recipe import Recipe
from llava_ckd.config import ConfigError, ModelSource
from llava_ckd.models.build import image_token_id
from llava_ckd.models.presets import preset_config

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


def meta_parameters(build: Callable[[], torch.nn.Module]) -> int:
    with torch.device("meta"):
        model = build()
    return sum(parameter.numel() for parameter in model.parameters())


def checkpoint_parameters(name_or_path: str) -> int:
    folder = Path(name_or_path)
    if (folder / "model.safetensors.index.json").is_file():
        shards = set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values())
        return sum(safetensors_parameters(folder / shard) for shard in shards)
    if (folder / "model.safetensors").is_file():
        return safetensors_parameters(folder / "model.safetensors")
    if not folder.is_dir() and not HUB_ID.match(name_or_path):
        raise FileNotFoundError(f"no checkpoint folder {name_or_path}")
    config = AutoConfig.from_pretrained(name_or_path)
    return meta_parameters(lambda: AutoModelForImageTextToText.from_config(config))


def parameter_count(source: ModelSource) -> int:
    if source.path is not None:
        return checkpoint_parameters(source.path)
    if source.vision is not None:
        vision = AutoConfig.from_pretrained(source.vision)
        vision = getattr(vision, "vision_config", vision)
        llm = AutoConfig.from_pretrained(source.llm)
        return (meta_parameters(lambda: AutoModel.from_config(vision))
                + meta_parameters(lambda: AutoModelForCausalLM.from_config(llm)))
    if not (source.tokenizer / "tokenizer.json").is_file():
        raise FileNotFoundError(f"tokenizer folder {source.tokenizer} has no tokenizer.json")
    tokenizer = AutoTokenizer.from_pretrained(source.tokenizer)
    config = preset_config(source.preset, len(tokenizer), image_token_id(tokenizer), tokenizer.pad_token_id)
    return meta_parameters(lambda: LlavaForConditionalGeneration(config))


def chain_capacities(recipe: Recipe, source: Path | str) -> dict[str, int]:
    """Each Teacher's capacity (stated, or counted); refuses a chain not listed in strictly ascending capacity."""
    capacities = {}
    for index, teacher in enumerate(recipe.teachers):
        if teacher.capacity is not None:
            capacities[teacher.name] = teacher.capacity
            continue
        try:
            capacities[teacher.name] = parameter_count(teacher.model)
        except (OSError, ValueError) as error:
            raise ConfigError(f"{source}: teachers.{index}.model: cannot count the parameters of Teacher "
                              f"{teacher.name!r}: {error}") from None
    for smaller, larger in pairwise(recipe.teachers):
        if capacities[smaller.name] >= capacities[larger.name]:
            raise ConfigError(
                f"{source}: teachers: the chain must be listed smallest first, but {smaller.name!r} "
                f"({capacities[smaller.name]:,} parameters, {_origin(smaller.capacity)}) is not smaller than "
                f"{larger.name!r} ({capacities[larger.name]:,}, {_origin(larger.capacity)})")
    return capacities


def _origin(stated: int | None) -> str:
    return "counted" if stated is None else "stated"
