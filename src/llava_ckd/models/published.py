"""Shapes of the published checkpoints the paper's recipes name, as `transformers` configs (no weights).

They serve the memory arithmetic (`scripts/memory_table.py`), the GPU smoke benchmark (random init at
full shape) and the tests that run the paper recipes at tiny width: same classes, same vocabulary
padding (Qwen2.5-7B's LM head has 152,064 rows, the smaller ones 151,936; the tokenizer has 151,665
tokens), far fewer parameters. Values copied from each checkpoint's `config.json`.
"""

from __future__ import annotations

from transformers import LlavaConfig, Qwen2_5_VLConfig, Qwen2Config, SiglipVisionConfig

from llava_ckd.models.build import composition_config

QWEN25_TOKENIZER_TOKENS = 151_665
"""Tokens in the Qwen2.5 tokenizer (ids 0..151,664); the LM heads are padded beyond it."""

SIGLIP_SO400M = "google/siglip-so400m-patch14-384"
SIGLIP_SHAPES = {
    SIGLIP_SO400M: dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                        image_size=384, patch_size=14),
}

_QWEN25_COMMON = dict(max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                      bos_token_id=151643, eos_token_id=151645, hidden_act="silu", use_sliding_window=False)
QWEN25_SHAPES = {
    "Qwen/Qwen2.5-0.5B-Instruct": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                       tie_word_embeddings=True),
    "Qwen/Qwen2.5-1.5B-Instruct": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                       num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                       tie_word_embeddings=True),
    "Qwen/Qwen2.5-3B-Instruct": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                                     num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
                                     tie_word_embeddings=True),
    "Qwen/Qwen2.5-7B-Instruct": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                     num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                     tie_word_embeddings=False),
}

_QWEN25_VL_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                         spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                         fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu")
QWEN25_VL_SHAPES = {
    "Qwen/Qwen2.5-VL-3B-Instruct": "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-VL-7B-Instruct": "Qwen/Qwen2.5-7B-Instruct",
}
"""Each Qwen2.5-VL checkpoint's LLM has the shape (and vocabulary padding, and tying) of this Qwen2.5 LLM."""
QWEN25_VL_TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                        vision_end_token_id=151653)

TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)


def _known(name: str, table: dict) -> dict:
    if name not in table:
        raise ValueError(f"no published shape for {name!r}; known: {', '.join(table)}")
    return table[name]


def text_config(name: str, tiny: bool = False) -> Qwen2Config:
    """Qwen2.5 LLM `name`; `tiny` keeps the class, vocabulary padding and tying but shrinks width and depth."""
    shape = _known(name, QWEN25_SHAPES) | (TINY_TEXT if tiny else {})
    return Qwen2Config(**_QWEN25_COMMON, **shape)


def vision_config(name: str, tiny: bool = False) -> SiglipVisionConfig:
    """SigLIP vision tower `name`; `tiny` keeps image size and patch (so the image-token count) but shrinks it."""
    return SiglipVisionConfig(**_known(name, SIGLIP_SHAPES) | (TINY_VISION if tiny else {}))


def qwen25_vl_config(name: str, tiny: bool = False) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL checkpoint `name`: its ViT (window attention, 2x2 patch merger) and its Qwen2.5 LLM; `tiny` keeps
    the classes, patch and merge sizes, the vocabulary padding and tying, and shrinks width and depth."""
    text = text_config(_known(name, QWEN25_VL_SHAPES), tiny)
    vision = _QWEN25_VL_VISION | (dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                       fullatt_block_indexes=[1]) if tiny else {})
    rotary_pairs = text.hidden_size // text.num_attention_heads // 2
    height_width = rotary_pairs * 3 // 8  # [16, 24, 24] at the published head size of 128
    text.rope_parameters = {"rope_type": "default", "rope_theta": text.rope_parameters["rope_theta"],
                            "mrope_section": [rotary_pairs - 2 * height_width, height_width, height_width]}
    return Qwen2_5_VLConfig(text_config=text.to_dict(), vision_config=vision | {"out_hidden_size": text.hidden_size},
                            tie_word_embeddings=text.tie_word_embeddings, **QWEN25_VL_TOKENS)


def llava_config(vision: str, llm: str, image_token: int, tiny: bool = False) -> LlavaConfig:
    """The composed VLM (`compose_vlm`'s layout) of published vision tower and LLM shapes."""
    return composition_config(vision_config(vision, tiny), text_config(llm, tiny), image_token)
