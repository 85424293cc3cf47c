"""Exact parameter counts and the widths the memory and FLOP rules need, of any model a recipe names, on the meta
device: no weights are read or downloaded, a config is enough.

Where the config comes from: a preset's from its tokenizer folder (the vocabulary sets the embedding rows); a
composition of published checkpoints, or a published Qwen2.5-VL checkpoint (`models/published.py`), from their known
shapes, any other from its config (local folder or the local hub cache, never the network); a checkpoint folder from
its config.json.

Image tokens: a fixed-resolution model (LLaVA layout) turns every image into the same number of tokens. A
dynamic-resolution model (Qwen2.5-VL) turns an image into tokens by its size, so an image size is assumed
(`ImageSize`, `llava-ckd plan --image-size`) and resized by the family's own rule (its image processor's smart_resize
with its default minimum and maximum pixels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedConfig,
    Qwen2_5_VLConfig,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from llava_ckd.errors import UserError
from llava_ckd.models.build import composition_config, image_token_id
from llava_ckd.models.load import preset_tokenizer
from llava_ckd.models.parts import PARTS, part_of
from llava_ckd.models.presets import preset_config
from llava_ckd.models.published import (
    QWEN25_SHAPES,
    QWEN25_TOKENIZER_TOKENS,
    QWEN25_VL_SHAPES,
    SIGLIP_SHAPES,
    qwen25_vl_config,
    text_config,
    vision_config,
)
from llava_ckd.models.source import ModelSource

FSDP_UNITS = ("Qwen2DecoderLayer", "SiglipEncoderLayer", "CLIPEncoderLayer")
"""The layer classes configs/accelerate/fsdp.yaml wraps (FSDP2 units; the rest forms the root unit)."""


class ShapeError(UserError, ValueError):
    """A model whose config is there but cannot be read, or of a family the rules do not cover."""


class ConfigAbsent(ShapeError):
    """A model whose config is not here: a folder not there yet, a hub id not in the local cache."""


@dataclass(frozen=True)
class ImageSize:
    """The size of the images a dynamic-resolution model is assumed to see, in pixels."""

    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> ImageSize:
        """`WIDTHxHEIGHT`, e.g. 640x480."""
        match = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not WIDTHxHEIGHT in pixels (e.g. 640x480)")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.width} × {self.height}"


TYPICAL_IMAGE = ImageSize(640, 480)
"""The image size assumed unless told otherwise: most of LLaVA-1.5's instruction images are COCO's, most of which
are 640 × 480."""


@dataclass(frozen=True)
class ModelShape:
    """Exact parameter counts of one VLM (vision tower + projector + LLM) and its widths."""

    parts: dict[str, int]
    """Parameters per part: vision, projector, llm (the LLM with its embeddings, and its LM head when untied)."""
    input_embedding: int
    hidden: int
    kv_hidden: int
    intermediate: int
    layers: int
    head_rows: int
    tied: bool
    vision_hidden: int
    vision_layers: int
    image_tokens: int
    """Tokens one image becomes in the LLM."""
    vision_patches: int
    """Tokens one image is in the vision tower (before a patch merger)."""
    vision_attended: int
    """Keys each vision token attends to, summed over the vision layers (window attention: its window)."""
    projector_input: int
    """The projector's input width per image token (the vision width; × the merged patches where a merger projects)."""
    projector_hidden: int
    """Its hidden width (its GELU's input and its second linear's input)."""
    image_assumption: str | None
    """How `image_tokens` was reached from an assumed image size (dynamic resolution); None where it is fixed."""
    largest_module: int
    """Most parameters held directly by one module (DeepSpeed's "largest layer": the embedding or the head)."""
    decoder_layer: int
    fsdp_root: int
    """Parameters outside FSDP's layer units: embeddings, LM head, projector, the vision tower's non-layer parts."""
    fsdp_root_trained: dict[str, int]
    """The root unit's parameters per part."""
    fsdp_unit: int
    """Parameters of the largest layer unit."""

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def count(self, parts) -> int:
        return sum(self.parts[part] for part in parts)

    @property
    def llm_matmul(self) -> int:
        """LLM parameters that multiply every token (all but the input embedding, a lookup, and the LM head)."""
        head = 0 if self.tied else self.head_rows * self.hidden
        return self.parts["llm"] - self.input_embedding - head


def vision_layout(config: PreTrainedConfig, image_size: ImageSize) -> dict:
    """The vision tower's widths and depth, and the tokens of one image in it and in the LLM: fixed by the config
    (LLaVA layout: one token per patch, full attention), or from `image_size` by the family's resize rule."""
    vision = config.vision_config
    if isinstance(config, Qwen2_5_VLConfig):
        patch, merge = vision.patch_size, vision.spatial_merge_size
        processor = Qwen2VLImageProcessorPil.size
        height, width = smart_resize(image_size.height, image_size.width, factor=patch * merge,
                                     min_pixels=processor["shortest_edge"], max_pixels=processor["longest_edge"])
        patches = (height // patch) * (width // patch)
        window = min(patches, (vision.window_size // patch) ** 2)
        full = len(vision.fullatt_block_indexes)
        return dict(vision_hidden=vision.hidden_size, vision_layers=vision.depth, image_tokens=patches // merge ** 2,
                    vision_patches=patches, vision_attended=full * patches + (vision.depth - full) * window,
                    projector_input=merge ** 2 * vision.hidden_size, projector_hidden=merge ** 2 * vision.hidden_size,
                    image_assumption=f"{patches // merge ** 2} per {image_size} image (resized to {width} × {height}, "
                                     f"{patch}-pixel patches merged {merge} × {merge})")
    image_tokens = getattr(config, "image_seq_length", None)
    if image_tokens is None:
        raise ShapeError(f"{type(config).__name__}: image tokens per image unknown (dynamic resolution; the image "
                         "sizes are turned into tokens for Qwen2.5-VL only)")
    return dict(vision_hidden=vision.hidden_size, vision_layers=vision.num_hidden_layers, image_tokens=image_tokens,
                vision_patches=image_tokens, vision_attended=vision.num_hidden_layers * image_tokens,
                projector_input=vision.hidden_size, projector_hidden=config.text_config.hidden_size,
                image_assumption=None)


def count_shape(config: PreTrainedConfig, image_size: ImageSize = TYPICAL_IMAGE) -> ModelShape:
    """Build the model of `config` on the meta device and count its parameters; `image_size`: the images assumed
    where the image tokens depend on it."""
    with torch.device("meta"):
        if isinstance(config, LlavaConfig):
            model = LlavaForConditionalGeneration(config)
        else:
            model = AutoModelForImageTextToText.from_config(config)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())  # a tied parameter is listed once

    parts = dict.fromkeys(PARTS, 0)
    for name, parameter in model.named_parameters():
        parts[part_of(name)] += parameter.numel()
    units = {name: count(m) for name, m in model.named_modules() if type(m).__name__ in FSDP_UNITS}
    outside = {name: p for name, p in model.named_parameters() if not any(name.startswith(u + ".") for u in units)}
    root_parts = dict.fromkeys(PARTS, 0)
    for name, parameter in outside.items():
        root_parts[part_of(name)] += parameter.numel()
    text = config.text_config
    return ModelShape(
        parts=parts,
        input_embedding=model.get_input_embeddings().weight.numel(),
        hidden=text.hidden_size,
        kv_hidden=text.num_key_value_heads * text.hidden_size // text.num_attention_heads,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        head_rows=model.get_output_embeddings().weight.shape[0],
        tied=model.get_output_embeddings().weight is model.get_input_embeddings().weight,
        **vision_layout(config, image_size),
        largest_module=max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()),
        decoder_layer=count(model.model.language_model.layers[0]),
        fsdp_root=sum(root_parts.values()),
        fsdp_root_trained=root_parts,
        fsdp_unit=max(units.values(), default=0),
    )


def local_config(name: str, role: str, download: bool = False) -> PreTrainedConfig:
    """The config of a local folder or of a hub id in the local cache (from the hub too, if `download`)."""
    folder = Path(name)
    if not folder.is_dir():
        try:
            return AutoConfig.from_pretrained(name, local_files_only=not download)
        except (OSError, ValueError) as error:
            where = "a hub id that loads" if download else "a hub id in the local cache (nothing is downloaded)"
            raise ConfigAbsent(f"no config for {role} {name!r}: no such folder, nor {where}"
                               + (f": {str(error).splitlines()[0]}" if download else "")) from None
    if not (folder / "config.json").is_file():
        raise ConfigAbsent(f"{role} folder {name} has no config.json")
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ShapeError(f"cannot read the config of {role} {name}: {str(error).splitlines()[0]}") from None


def composition_shape_config(source: ModelSource, download: bool) -> LlavaConfig:
    if source.vision in SIGLIP_SHAPES:
        vision = vision_config(source.vision)
    else:
        vision = local_config(source.vision, "vision model", download)
        vision = getattr(vision, "vision_config", vision)
    if source.llm in QWEN25_SHAPES:
        text, image_token = text_config(source.llm), QWEN25_TOKENIZER_TOKENS
    else:
        text = local_config(source.llm, "LLM", download)
        try:
            image_token = len(AutoTokenizer.from_pretrained(source.llm, local_files_only=not download))
        except (OSError, ValueError) as error:
            raise ShapeError(f"cannot read the tokenizer of LLM {source.llm!r}: {str(error).splitlines()[0]}") \
                from None
    # compose_vlm appends <image> to the tokenizer: its id is the tokenizer's length, inside Qwen2.5's padded rows
    return composition_config(vision, text, image_token, source.vision_feature_layer)


def shape_of(source: ModelSource, download: bool = False, image_size: ImageSize = TYPICAL_IMAGE) -> ModelShape:
    """The shape of the model a recipe's model source makes; ConfigAbsent when its config is not here (hub ids are
    looked up in the local cache only, unless `download`), ShapeError when it cannot be read. `image_size`: the images
    a dynamic-resolution model is assumed to see."""
    if source.path in QWEN25_VL_SHAPES and not Path(source.path).is_dir():
        config = qwen25_vl_config(source.path)
    elif source.path is not None:
        config = local_config(source.path, "model", download)
    elif source.vision is not None:
        config = composition_shape_config(source, download)
    else:
        try:
            tokenizer = preset_tokenizer(source)
        except FileNotFoundError as error:  # the vocabulary sets the embedding rows
            raise ConfigAbsent(f"preset {source.preset!r}: {error}") from None
        config = preset_config(source.preset, len(tokenizer), image_token_id(tokenizer), tokenizer.pad_token_id)
    return count_shape(config, image_size)
