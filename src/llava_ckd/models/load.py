"""One entry point from a recipe's model source to a (model, processor) pair."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedModel, ProcessorMixin

from llava_ckd.config import ModelSource
from llava_ckd.models.build import build_preset, compose_vlm, load_vlm


def model_from_source(source: ModelSource, seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    if source.path is not None:
        return load_vlm(source.path, source.dtype)
    if source.vision is not None:
        return compose_vlm(source.vision, source.llm, source.vision_feature_layer, source.dtype)
    if not (source.tokenizer / "tokenizer.json").is_file():
        raise FileNotFoundError(f"tokenizer folder {source.tokenizer} has no tokenizer.json "
                                "(`llava-ckd make-data` writes one beside the data)")
    return build_preset(source.preset, AutoTokenizer.from_pretrained(source.tokenizer), seed=seed,
                        vision_init=source.vision_init)
