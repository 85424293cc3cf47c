"""Parameter counts from configs on the meta device equal those of the models the package builds."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from llava_ckd.config import ModelSource
from llava_ckd.models import build_preset
from llava_ckd.models.parts import set_trainable
from llava_ckd.models.presets import PRESETS
from llava_ckd.models.published import QWEN25_SHAPES, QWEN25_TOKENIZER_TOKENS, SIGLIP_SO400M, llava_config
from llava_ckd.plan.shapes import ConfigAbsent, ShapeError, count_shape, shape_of


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
