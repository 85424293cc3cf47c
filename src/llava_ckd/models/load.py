"""One entry point from a recipe's model source to a (model, processor) pair, or to its tokenizer alone."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

from llava_ckd.models.build import (
    ModelError,
    build_preset,
    checkpoint_location,
    compose_vlm,
    composition_tokenizer,
    load_vlm,
    loading,
)
from llava_ckd.models.processors import processor_image_token_id
from llava_ckd.models.source import ModelSource


def model_from_source(source: ModelSource, seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    if source.path is not None:
        return checked(*load_vlm(source.path, source.dtype), source.path)
    if source.vision is not None:
        return compose_vlm(source.vision, source.llm, source.vision_feature_layer, source.dtype)
    return build_preset(source.preset, preset_tokenizer(source), seed=seed, vision_init=source.vision_init)


def preset_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    if not (source.tokenizer / "tokenizer.json").is_file():
        raise FileNotFoundError(f"tokenizer folder {source.tokenizer} has no tokenizer.json "
                                "(`llava-ckd make-data` writes one beside the data)")
    return AutoTokenizer.from_pretrained(source.tokenizer)


def tokenizer_from_source(source: ModelSource) -> PreTrainedTokenizerBase:
    """The tokenizer the model of `source` is trained with, read from local files only (a hub id not in the
    local cache raises ModelError), without loading any weights."""
    if source.path is not None:
        location = checkpoint_location(source.path)
        return loading(location, "model", lambda: AutoTokenizer.from_pretrained(location, local_files_only=True))
    if source.vision is not None:
        return composition_tokenizer(source.llm, local_files_only=True)
    return preset_tokenizer(source)


def checked(model: PreTrainedModel, processor: ProcessorMixin, name: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Refuse a checkpoint whose processor marks images with another token than the one its model reads."""
    expected, marked = model.config.image_token_id, processor_image_token_id(processor)
    if expected != marked:
        raise ModelError(f"{name}: the model reads image features at token id {expected}, its processor writes image "
                         f"tokens as id {marked} ({processor.tokenizer.convert_ids_to_tokens(marked)!r})")
    return model, processor
