"""Parameter counts from configs on the meta device equal those of the models the package builds."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from llava_ckd.models import build_preset
from llava_ckd.models.parts import set_trainable
from llava_ckd.models.presets import PRESETS
from llava_ckd.models.published import (
    QWEN25_SHAPES,
    QWEN25_TOKENIZER_TOKENS,
    SIGLIP_SO400M,
    llava_config,
    qwen25_vl_config,
)
from llava_ckd.models.shapes import ConfigAbsent, ImageSize, ShapeError, count_shape, shape_of
from llava_ckd.models.source import ModelSource
from llava_ckd.plan.flops import forward_flops
from llava_ckd.plan.tokens import assumed


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_counts_equal_the_built_model(preset, tokenizer, tokenizer_dir):
    shape = shape_of(ModelSource(preset=preset, tokenizer=tokenizer_dir))
    model, _ = build_preset(preset, tokenizer)
    assert shape.total == sum(p.numel() for p in model.parameters())
    assert shape.parts == set_trainable(model, ["vision", "projector", "llm"])
    assert shape.image_tokens == model.config.image_seq_length
    assert shape.head_rows == model.lm_head.weight.shape[0] == len(tokenizer)


@pytest.mark.parametrize("llm", list(QWEN25_SHAPES))
def test_paper_shapes_count_as_the_instantiated_model_at_tiny_width_and_full_shape(llm):
    """The same counting code on the published classes: at tiny width against a real (CPU) model, at full shape on
    the meta device, part by part."""
    tiny = llava_config(SIGLIP_SO400M, llm, QWEN25_TOKENIZER_TOKENS, tiny=True)
    model = LlavaForConditionalGeneration(tiny)
    assert count_shape(tiny).total == sum(p.numel() for p in model.parameters())
    assert count_shape(tiny).parts == set_trainable(model, ["vision", "projector", "llm"])

    full = llava_config(SIGLIP_SO400M, llm, QWEN25_TOKENIZER_TOKENS)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(full)
    shape = shape_of(ModelSource(vision=SIGLIP_SO400M, llm=llm))
    assert shape.total == sum(p.numel() for p in model.parameters())
    assert shape.parts["vision"] == 428_225_600  # SigLIP-so400m-patch14-384's vision tower
    hidden = full.text_config.hidden_size
    assert shape.parts["projector"] == 1152 * hidden + hidden + hidden * hidden + hidden  # 1152 -> d -> d, biases
    assert shape.image_tokens == 729 and shape.vision_hidden == 1152


@pytest.mark.parametrize(
    ("size", "card_total", "card_non_embedding"),
    [("0.5B", 0.49, 0.36), ("1.5B", 1.54, 1.31), ("3B", 3.09, 2.77), ("7B", 7.61, 6.53)],
)
def test_llm_parameters_match_the_qwen25_model_cards(size, card_total, card_non_embedding):
    """The cards state billions to two decimals (7B: 7.6156 is written 7.61), so agree within one last digit."""
    shape = shape_of(ModelSource(vision=SIGLIP_SO400M, llm=f"Qwen/Qwen2.5-{size}-Instruct"))
    embeddings = shape.input_embedding * (1 if shape.tied else 2)
    assert abs(shape.parts["llm"] / 1e9 - card_total) < 0.01
    assert abs((shape.parts["llm"] - embeddings) / 1e9 - card_non_embedding) < 0.01
    assert shape.llm_matmul == shape.parts["llm"] - embeddings


def test_a_saved_checkpoint_counts_from_its_config(tokenizer, tmp_path):
    model, processor = build_preset("tiny-ta", tokenizer)
    model.save_pretrained(tmp_path / "ckpt")
    assert shape_of(ModelSource(path=str(tmp_path / "ckpt"))).total == sum(p.numel() for p in model.parameters())


def test_absent_and_unreadable_configs_are_told_apart(tmp_path):
    with pytest.raises(ConfigAbsent, match="no such folder, nor a hub id in the local cache"):
        shape_of(ModelSource(path=str(tmp_path / "nothing")))
    (tmp_path / "broken").mkdir()
    with pytest.raises(ConfigAbsent, match="has no config.json"):
        shape_of(ModelSource(path=str(tmp_path / "broken")))
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ShapeError, match=f"cannot read the config of model {tmp_path / 'broken'}") as error:
        shape_of(ModelSource(path=str(tmp_path / "broken")))
    assert not isinstance(error.value, ConfigAbsent)


@pytest.mark.parametrize(("name", "published_total"), [("Qwen/Qwen2.5-VL-3B-Instruct", 3_754_622_976),
                                                      ("Qwen/Qwen2.5-VL-7B-Instruct", 8_292_166_656)])
def test_published_qwen25_vl_checkpoints_count_as_the_instantiated_model_without_a_download(name, published_total,
                                                                                           monkeypatch):
    """A hub id of a published Qwen2.5-VL checkpoint counts from its known shape (the hub is off): at tiny width the
    counting code agrees with a real (CPU) model, at full shape with the figures the cascade dry run prints."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = qwen25_vl_config(name, tiny=True)
    model = Qwen2_5_VLForConditionalGeneration(tiny)
    assert count_shape(tiny).total == sum(p.numel() for p in model.parameters())
    assert count_shape(tiny).parts == set_trainable(model, ["vision", "projector", "llm"])

    shape = shape_of(ModelSource(path=name))
    assert shape.total == published_total
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(qwen25_vl_config(name))
    assert shape.parts == set_trainable(model, ["vision", "projector", "llm"])
    assert (shape.vision_layers, shape.vision_hidden) == (32, 1280)  # the ViT's `depth` and `hidden_size`
    assert shape.projector_input == 4 * 1280  # the merger projects 2 × 2 patches
    assert shape.head_rows == model.lm_head.weight.shape[0] and shape.tied == (name.endswith("3B-Instruct"))


@pytest.mark.parametrize(("width", "height"), [(640, 480), (1600, 1200)])
def test_dynamic_resolution_image_tokens_follow_the_image_processor(width, height):
    """Qwen2.5-VL's image tokens for an assumed image size: transformers' smart_resize with the image processor's
    default pixel bounds (1600 × 1200 lies above its maximum, so it is scaled down), and the grid the image
    processor itself makes of such an image."""
    shape = count_shape(qwen25_vl_config("Qwen/Qwen2.5-VL-3B-Instruct", tiny=True), ImageSize(width, height))
    resized_height, resized_width = smart_resize(height, width, factor=28, min_pixels=56 * 56,
                                                 max_pixels=28 * 28 * 1280)
    assert shape.vision_patches == (resized_height // 14) * (resized_width // 14)
    assert shape.image_tokens == shape.vision_patches // 4
    grid = Qwen2VLImageProcessorPil()(Image.new("RGB", (width, height)), return_tensors="pt")["image_grid_thw"]
    assert shape.vision_patches == int(grid.prod())
    assert f"{shape.image_tokens} per {width} × {height} image (resized to {resized_width} × {resized_height}" \
           in shape.image_assumption
    # window attention: the tiny tower's one full-attention layer sees every patch, the other an 8 × 8 window
    assert shape.vision_attended == shape.vision_patches + 64


def test_image_size_is_parsed_or_refused():
    assert ImageSize.parse("336x336") == ImageSize(336, 336) and str(ImageSize(640, 480)) == "640 × 480"
    with pytest.raises(ValueError, match="is not WIDTHxHEIGHT"):
        ImageSize.parse("336")


def test_qwen25_vl_vision_flops_count_patches_and_window_attention():
    """Per 640 × 480 image: every vision weight on each of the 1,564 patches; attention over all patches in the 4
    full-attention layers, over a 64-patch window in the other 28; the merger on the 391 image tokens."""
    shape = shape_of(ModelSource(path="Qwen/Qwen2.5-VL-7B-Instruct"))
    flops = forward_flops(shape, assumed(1, 0, 0, 1, shape.image_tokens), head_positions=0)
    assert flops["vision"] == (2 * 631_975_680 + 4 * 1280 * (4 * 1564 + 28 * 64)) * 1564
    assert flops["projector"] == 2 * shape.parts["projector"] * 391
