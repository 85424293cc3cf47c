"""Tiny models of the VLM families people distil today, each from its own config class, with a processor made of
local files: the tests' byte-level tokenizer extended with the family's special tokens, the family's image processor
class, and the family's chat template (tests/fixtures/chat_templates/, sources and licences in its README).
Processors that hold a video processor (Qwen-VL, InternVL, LLaVA-OneVision) are built without it, as `load_vlm`
builds them where torchvision is missing (`llava_ckd.models.processors`); saved and loaded, they take that path.

Data: LLaVA conversation records whose images differ in size (square and wide), so that families with dynamic
resolution or tiling expand them into different numbers of image tokens, plus a record with two images.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    GotOcr2ImageProcessorPil,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)

from llava_ckd.models import build_preset, train_tokenizer
from llava_ckd.models.processors import without_video
from tests.conftest import CORPUS

TEMPLATES = Path(__file__).parents[1] / "fixtures" / "chat_templates"
TILE = 32
"""Image side the tiny vision towers read (a tile, for the tiling families)."""


def tiny_text(vocab_size: int, pad_token_id: int, hidden: int, **extra) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, pad_token_id=pad_token_id, **extra)


def base_tokenizer(extra_corpus: list[str], specials: list[str], named: dict[str, str] | None = None):
    """The tests' byte-level BPE with the family's special tokens added (`named`: the ones its processor looks up
    by name, such as Gemma 3's `boi_token`)."""
    trained = train_tokenizer(CORPUS * 20 + extra_corpus * 20, vocab_size=320)
    trained.add_special_tokens({"additional_special_tokens": specials + list((named or {}).values())})
    return with_named_tokens(trained, named) if named else trained


def with_named_tokens(tokenizer: PreTrainedTokenizerFast, named: dict[str, str]) -> PreTrainedTokenizerFast:
    """`tokenizer` (holding the tokens of `named`) with `named` as its named special tokens, in place of its own."""
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, pad_token=tokenizer.pad_token,
                                   eos_token=tokenizer.eos_token, extra_special_tokens=named, padding_side="right",
                                   model_max_length=tokenizer.model_max_length)


def llava(hidden: int, seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """LLaVA / TinyLLaVA composition (the presets): a fixed 16 image tokens per 32 px image, ChatML."""
    return build_preset({32: "tiny-student", 64: "tiny-ta"}[hidden], base_tokenizer([], []), seed=seed)


def smolvlm(hidden: int, seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """SmolVLM (Idefics3 classes): images larger than a tile are split into tiles plus a global view."""
    specials = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
                *[f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]]
    tokenizer = base_tokenizer(["User: Assistant:"], specials)
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 2 * TILE}, max_image_size={"longest_edge": TILE})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=(TEMPLATES / "smolvlm.jinja").read_text())
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=TILE, patch_size=8),
        text_config=dict(model_type="llama", **tiny_text(len(tokenizer), tokenizer.pad_token_id, hidden)),
        scale_factor=2, image_token_id=processor.image_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return Idefics3ForConditionalGeneration(config).eval(), processor


def gemma3(hidden: int, seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Gemma 3: a fixed number of soft image tokens between <start_of_image> and <end_of_image>."""
    tokenizer = base_tokenizer(["model user"], ["<start_of_turn>", "<end_of_turn>", "<bos>"],
                               {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                "image_token": "<image_soft_token>"})
    tokenizer.bos_token = "<bos>"
    image_processor = Gemma3ImageProcessorPil(size={"height": TILE, "width": TILE})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4,
                                chat_template=(TEMPLATES / "gemma3.jinja").read_text())
    config = Gemma3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=TILE, patch_size=8, vision_use_head=False),
        text_config=dict(**tiny_text(len(tokenizer), tokenizer.pad_token_id, hidden), head_dim=hidden // 4,
                         sliding_window=64),
        mm_tokens_per_image=4, image_token_id=tokenizer.image_token_id, boi_token_id=tokenizer.boi_token_id,
        eoi_token_id=tokenizer.eoi_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():  # Gemma 3 initialises its projector to zero: no image would reach a random model
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.5)
    return model, processor


QWEN_VL_TOKENS = {"vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
                  "image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                   "video_token": "<video>"}


def qwen_vl_token_ids(tokenizer) -> dict:
    return {f"{name}_id": tokenizer.convert_tokens_to_ids(token) for name, token in QWEN_VL_TOKENS.items()}


def qwen_vl_text_ends(tokenizer) -> dict:
    """The tokenizer's own end of text, and no start token (Qwen-VL's configs default to Qwen's vocabulary ids)."""
    return {"bos_token_id": None, "eos_token_id": tokenizer.eos_token_id}


def qwen25_vl_model(tokenizer, hidden: int, seed: int) -> Qwen2_5_VLForConditionalGeneration:
    config = Qwen2_5_VLConfig(
        text_config=dict(**tiny_text(len(tokenizer), tokenizer.pad_token_id, hidden), **qwen_vl_text_ends(tokenizer),
                         rope_scaling={"type": "mrope", "mrope_section": [hidden // 32, hidden // 32, hidden // 16]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           fullatt_block_indexes=[1], window_size=56),
        **qwen_vl_text_ends(tokenizer), **qwen_vl_token_ids(tokenizer))
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def qwen3_vl_model(tokenizer, hidden: int, seed: int) -> Qwen3VLForConditionalGeneration:
    config = Qwen3VLConfig(
        text_config=dict(**tiny_text(len(tokenizer), tokenizer.pad_token_id, hidden), **qwen_vl_text_ends(tokenizer),
                         head_dim=hidden // 4, rope_scaling={"rope_type": "default", "mrope_interleaved": True,
                                       "mrope_section": [hidden // 32, hidden // 32, hidden // 16]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, num_position_embeddings=64, deepstack_visual_indexes=[0]),
        **qwen_vl_text_ends(tokenizer), **qwen_vl_token_ids(tokenizer))
    torch.manual_seed(seed)
    return Qwen3VLForConditionalGeneration(config).eval()


def internvl_model(tokenizer, hidden: int, seed: int) -> InternVLForConditionalGeneration:
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=[TILE, TILE], patch_size=[8, 8]),
        text_config=dict(model_type="qwen2", **tiny_text(len(tokenizer), tokenizer.pad_token_id, hidden)),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4, downsample_ratio=0.5)
    torch.manual_seed(seed)
    return InternVLForConditionalGeneration(config).eval()


def qwen_vl_image_processor() -> Qwen2VLImageProcessorPil:
    """Qwen-VL's dynamic resolution: 14 px patches, 2x2 merged into one image token, at least 56x56 px."""
    return Qwen2VLImageProcessorPil(patch_size=14, merge_size=2)


def internvl_image_processor() -> GotOcr2ImageProcessorPil:
    """InternVL's tiling: images split into up to 4 tiles of 32 px plus a thumbnail."""
    return GotOcr2ImageProcessorPil(size={"height": TILE, "width": TILE}, crop_to_patches=True, max_patches=4)


def qwen_vl(model: Callable, processor_class: type[ProcessorMixin]):
    """Qwen2.5-VL / Qwen3-VL: `<|image_pad|>` once per 2x2 merged patch of the image's grid, M-RoPE."""
    def build(hidden: int, seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
        tokenizer = base_tokenizer([], [], QWEN_VL_TOKENS)
        processor = without_video(processor_class)(image_processor=qwen_vl_image_processor(), tokenizer=tokenizer,
                                                   chat_template=(TEMPLATES / "qwen2_vl.jinja").read_text())
        return model(tokenizer, hidden, seed), processor
    return build


def internvl(hidden: int, seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """InternVL: `<img>`, 4 `<IMG_CONTEXT>` per tile of the image, `</img>`."""
    tokenizer = base_tokenizer([], [], INTERNVL_TOKENS)
    processor = without_video(InternVLProcessor)(image_processor=internvl_image_processor(), tokenizer=tokenizer,
                                                 image_seq_length=4,
                                                 chat_template=(TEMPLATES / "internvl.jinja").read_text())
    return internvl_model(tokenizer, hidden, seed), processor


GRID_PINPOINTS = [[TILE, TILE], [TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE]]


def llava_onevision(hidden: int, seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """LLaVA-OneVision (anyres): a base view plus the tiles of the best grid resolution, a newline per row of
    features; 16 image tokens per 32 px view."""
    tokenizer = base_tokenizer([], [], {"image_token": "<image>", "video_token": "<video>"})
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": TILE, "width": TILE},
                                                      image_grid_pinpoints=GRID_PINPOINTS)
    processor = without_video(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=16,
        vision_feature_select_strategy="full", chat_template=(TEMPLATES / "llava_onevision.jinja").read_text())
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=TILE, patch_size=8),
        text_config=dict(model_type="qwen2", **tiny_text(len(tokenizer), tokenizer.pad_token_id, hidden)),
        image_token_index=tokenizer.image_token_id, video_token_index=tokenizer.video_token_id,
        image_grid_pinpoints=GRID_PINPOINTS, vision_feature_select_strategy="full", vision_feature_layer=-1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlavaOnevisionForConditionalGeneration(config).eval(), processor


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[int, int], tuple[PreTrainedModel, ProcessorMixin]]
    """(hidden width, seed) -> tiny model and processor; the processor is the same for every width."""
    end_of_turn: str
    """What the family's template puts after an assistant reply (inside its label span)."""
    variable_image_tokens: bool


FAMILIES = {
    "llava": Family("llava", llava, "<|im_end|>", variable_image_tokens=False),
    "smolvlm": Family("smolvlm", smolvlm, "<end_of_utterance>", variable_image_tokens=True),
    "gemma3": Family("gemma3", gemma3, "<end_of_turn>", variable_image_tokens=False),
    "qwen2.5-vl": Family("qwen2.5-vl", qwen_vl(qwen25_vl_model, Qwen2_5_VLProcessor), "<|im_end|>",
                         variable_image_tokens=True),
    "qwen3-vl": Family("qwen3-vl", qwen_vl(qwen3_vl_model, Qwen3VLProcessor), "<|im_end|>",
                       variable_image_tokens=True),
    "internvl": Family("internvl", internvl, "<|im_end|>", variable_image_tokens=True),
    "llava-onevision": Family("llava-onevision", llava_onevision, "<|im_end|>", variable_image_tokens=True),
}


@pytest.fixture(params=list(FAMILIES), scope="module")
def family(request) -> Family:
    return FAMILIES[request.param]


def save(model: PreTrainedModel, processor: ProcessorMixin, folder: Path) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(family, tmp_path_factory) -> dict[str, Path]:
    """The family's Student (narrow) and Teacher (wide) saved as ordinary checkpoint folders."""
    root = tmp_path_factory.mktemp(family.name)
    return {"student": save(*family.build(32, 0), root / "student"),
            "teacher": save(*family.build(64, 1), root / "teacher")}


IMAGES = {"square.png": ((TILE, TILE), (200, 30, 30)), "wide.png": ((2 * TILE, TILE), (30, 160, 40)),
          "small.png": ((20, 20), (40, 60, 210))}
RECORDS = [
    {"id": "square", "image": "square.png",
     "conversations": [{"from": "human", "value": "<image>\nWhat colour is the image?"},
                       {"from": "gpt", "value": "red"},
                       {"from": "human", "value": "Is it red?"},
                       {"from": "gpt", "value": "yes"}]},
    {"id": "wide", "image": "wide.png",
     "conversations": [{"from": "human", "value": "<image>\nWhat colour is the image?"},
                       {"from": "gpt", "value": "green"}]},
    {"id": "two", "image": ["square.png", "wide.png"],
     "conversations": [{"from": "human", "value": "<image>\n<image>\nHow many objects are there?"},
                       {"from": "gpt", "value": "2"}]},
    {"id": "text", "conversations": [{"from": "human", "value": "Describe the image briefly."},
                                     {"from": "gpt", "value": "A red circle at the top left."}]},
    {"id": "small", "image": "small.png",
     "conversations": [{"from": "human", "value": "What colour is the image?\n<image>"},
                       {"from": "gpt", "value": "blue"}]},
]


def write_family_data(folder: Path) -> Path:
    (folder / "images").mkdir()
    generator = torch.Generator().manual_seed(0)
    for name, (size, colour) in IMAGES.items():  # the colour on the left, its complement on the right, and noise
        width, height = size
        pixels = torch.tensor(colour).expand(height, width, 3).clone()
        pixels[:, width // 2:] = 255 - pixels[:, width // 2:]
        pixels += torch.randint(-40, 40, (height, width, 3), generator=generator)
        Image.fromarray(pixels.clamp(0, 255).to(torch.uint8).numpy()).save(folder / "images" / name)
    path = folder / "train.json"
    path.write_text(json.dumps(RECORDS))
    return path


@pytest.fixture(scope="session")
def family_data(tmp_path_factory) -> Path:
    return write_family_data(tmp_path_factory.mktemp("family-data"))
