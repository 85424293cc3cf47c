"""Tiny model presets, random init from configs alone, for the tests and the CPU demo.

`tiny-student`, `tiny-ta`, `tiny-teacher` and the `ladder-*` sizes share one vision tower shape (CLIP ViT
on 32 px images, patch 8: one image token per cell of the synthetic benchmark's 4x4 grid) and differ only
in the size of their Qwen2 language model, so capacity is what separates them. `tiny-qwen2-siglip` mirrors the
paper's architecture (SigLIP vision tower without CLS token, Qwen2 LLM, 2-layer GELU projector,
vision feature layer -2) at toy width.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import CLIPVisionConfig, LlavaConfig, PreTrainedConfig, Qwen2Config, SiglipVisionConfig


@dataclass(frozen=True)
class TextSize:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int


TEXT_SIZES = {
    "tiny-student": TextSize(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64),
    "tiny-ta": TextSize(hidden=96, layers=3, heads=4, kv_heads=2, intermediate=256),
    "tiny-teacher": TextSize(hidden=192, layers=4, heads=6, kv_heads=2, intermediate=512),
    "tiny-qwen2-siglip": TextSize(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128),
    # the capacity ladder of the study (configs/cascade/study.yaml): Teachers >= 4x apart in LLM parameters
    "ladder-student": TextSize(hidden=48, layers=2, heads=2, kv_heads=1, intermediate=128),
    "ladder-small": TextSize(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=256),
    "ladder-medium": TextSize(hidden=128, layers=2, heads=4, kv_heads=2, intermediate=640),
    "ladder-large": TextSize(hidden=256, layers=2, heads=8, kv_heads=2, intermediate=1536),
}
PRESETS = tuple(TEXT_SIZES)

IMAGE_SIZE = 32
PATCH_SIZE = 8


def clip_vision_config() -> CLIPVisionConfig:
    # initializer_factor 2: the default init gives too weak an image signal to learn from scratch quickly.
    return CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, projection_dim=64, initializer_factor=2.0,
    )


def _siglip_vision() -> SiglipVisionConfig:
    return SiglipVisionConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=64, intermediate_size=128,
        num_hidden_layers=3, num_attention_heads=4, vision_use_head=False,
    )


def _qwen2_text(size: TextSize, vocab_size: int, pad_token_id: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        max_position_embeddings=1024, tie_word_embeddings=True, pad_token_id=pad_token_id,
    )


def preset_config(name: str, vocab_size: int, image_token_id: int, pad_token_id: int) -> LlavaConfig:
    """The LlavaConfig of preset `name` for a tokenizer of `vocab_size` tokens."""
    if name not in TEXT_SIZES:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    paper_shaped = name == "tiny-qwen2-siglip"
    vision: PreTrainedConfig = _siglip_vision() if paper_shaped else clip_vision_config()
    grid_tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2
    return LlavaConfig(
        vision_config=vision,
        text_config=_qwen2_text(TEXT_SIZES[name], vocab_size, pad_token_id),
        image_token_index=image_token_id,
        image_seq_length=grid_tokens,
        projector_hidden_act="gelu",
        # SigLIP has no CLS token: keep every patch. CLIP's "default" drops its CLS token.
        vision_feature_select_strategy="full" if paper_shaped else "default",
        vision_feature_layer=-2 if paper_shaped else -1,
        tie_word_embeddings=True,
    )
