"""Build LLaVA-style VLMs as Hugging Face models: load a checkpoint, compose vision + LLM, or a tiny preset.

Whatever way a model is made, it is a `transformers` model with a processor, saved with
`save_pretrained` and reloaded with plain `from_pretrained`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    CLIPImageProcessorPil,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    SiglipImageProcessorPil,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from llava_ckd.errors import UserError
from llava_ckd.models.presets import IMAGE_SIZE, preset_config
from llava_ckd.models.processors import load_processor
from llava_ckd.models.tokenizer import IMAGE_TOKEN

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Loaded = TypeVar("Loaded")


class ModelError(UserError, OSError):
    """A model that cannot be loaded: not a checkpoint folder, corrupt weights, or a hub id that does not load."""


def looks_local(name: str) -> bool:
    """Whether `name` is meant as a local path rather than a hub id (`org/name`)."""
    if name.startswith(("./", "../", "/", "~", f".{os.sep}", f"..{os.sep}", os.sep)) or name in (".", ".."):
        return True
    if name.count(os.sep) > 1 or name.count("/") > 1:
        return True
    parent = Path(name).expanduser().parent
    return parent != Path(".") and parent.is_dir()


def checkpoint_location(name_or_path: str | Path, role: str = "model") -> str:
    """A hub id as it is; a local checkpoint folder checked to exist and to hold config.json (`~` expanded).

    `role` names the checkpoint in the messages ("model", "vision model", "LLM", ...).
    """
    name = str(name_or_path)
    folder = Path(name).expanduser()
    if not folder.exists():
        if looks_local(name):
            raise FileNotFoundError(f"{role} folder not found: {name}")
        return name
    if not folder.is_dir():
        raise ModelError(f"{role} path is not a folder: {name} (give the checkpoint folder)")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{role} folder {name} has no config.json: not a saved checkpoint "
                                "(a folder written by save_pretrained or a stage's final/)")
    return str(folder)


def unreadable_weights(location: str) -> list[Path]:
    """The safetensors files of a local checkpoint folder whose header cannot be read (empty for a hub id)."""
    broken = []
    for file in sorted(Path(location).glob("*.safetensors")) if Path(location).is_dir() else []:
        try:
            with safe_open(file, framework="pt"):
                pass
        except (SafetensorError, OSError):
            broken.append(file)
    return broken


def loading(location: str, role: str, load: Callable[[], Loaded]) -> Loaded:
    """`load()`, with corrupt weights and failed hub look-ups re-raised as ModelError naming the checkpoint."""
    try:
        return load()
    except SafetensorError as error:
        broken = unreadable_weights(location)
        files = ", ".join(str(file) for file in broken) if broken else f"the weights of {location}"
        raise ModelError(f"{role} weights unreadable (truncated or corrupt safetensors): {files}: {error}") from error
    except ModelError:
        raise
    except OSError as error:
        raise ModelError(f"cannot load {role} {location!r}: {error}") from error


def image_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ModelError(f"tokenizer {tokenizer.name_or_path!r} has no {IMAGE_TOKEN} token")
    return token_id


def llava_processor(config: LlavaConfig, tokenizer: PreTrainedTokenizerBase, image_processor) -> LlavaProcessor:
    """A processor whose `<image>` expansion matches the model's number of image features."""
    has_cls = config.vision_config.model_type == "clip_vision_model"
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1 if has_cls else 0,
        chat_template=tokenizer.chat_template,
    )


def build_preset(
    name: str, tokenizer: PreTrainedTokenizerBase, seed: int = 0, vision_init: str | Path | None = None
) -> tuple[PreTrainedModel, LlavaProcessor]:
    """A randomly initialised tiny preset (see `presets.py`) for `tokenizer`.

    `vision_init`: a saved vision tower of the preset's shape (`llava-ckd train-vision`) to start from.
    """
    config = preset_config(name, len(tokenizer), image_token_id(tokenizer), tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    if vision_init is not None:
        location = checkpoint_location(vision_init, "vision_init")
        trained = loading(location, "vision_init", lambda: AutoModel.from_pretrained(location))
        def shapes(module):
            return {name: tensor.shape for name, tensor in module.state_dict().items()}

        if shapes(trained) != shapes(model.model.vision_tower):
            raise ModelError(f"vision tower in {vision_init} does not have the shape of preset {name}'s")
        model.model.vision_tower.load_state_dict(trained.state_dict())
    return model.eval(), llava_processor(config, tokenizer, preset_image_processor(config.vision_config))


def preset_image_processor(vision_config: PreTrainedConfig):
    if vision_config.model_type == "clip_vision_model":
        return CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                     crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def load_vlm(name_or_path: str | Path, dtype: str = "fp32") -> tuple[PreTrainedModel, ProcessorMixin]:
    """Any image-text-to-text checkpoint (LLaVA, LLaVA-OneVision, Qwen2-VL, ...): hub id or local folder.

    A local path that does not exist raises FileNotFoundError; corrupt weights raise ModelError naming the file.
    Without torchvision, a processor that holds a video processor is built without it (`processors.py`).
    """
    location = checkpoint_location(name_or_path)
    model = loading(location, "model",
                    lambda: AutoModelForImageTextToText.from_pretrained(location, dtype=DTYPES[dtype]))
    try:
        processor = loading(location, "model", lambda: load_processor(location, model.config))
    except ImportError as error:
        reason = str(error).strip().splitlines()[0]
        raise ModelError(f"cannot build the processor of {location!r}: {reason}") from error
    return model.eval(), processor


def composition_config(
    vision_config: PreTrainedConfig, text_config: PreTrainedConfig, image_token: int, vision_feature_layer: int = -2
) -> LlavaConfig:
    """The LlavaConfig of a vision tower + LLM joined by a 2-layer GELU projector, one token per image patch."""
    has_cls = vision_config.model_type == "clip_vision_model"
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token,
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if has_cls else "full",  # SigLIP has no CLS token to drop
        vision_feature_layer=vision_feature_layer,
        tie_word_embeddings=text_config.tie_word_embeddings,
    )


def composition_tokenizer(llm: str | Path, local_files_only: bool = False) -> PreTrainedTokenizerBase:
    """The LLM's tokenizer with the `<image>` token added when missing, as a composition uses it."""
    location = checkpoint_location(llm, "LLM")
    tokenizer = loading(location, "LLM",
                        lambda: AutoTokenizer.from_pretrained(location, local_files_only=local_files_only))
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def compose_vlm(
    vision: str | Path,
    llm: str | Path,
    vision_feature_layer: int = -2,
    dtype: str = "fp32",
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """TinyLLaVA-style: a vision encoder checkpoint + an LLM checkpoint + a fresh 2-layer GELU projector.

    `vision` may be a full CLIP/SigLIP checkpoint (its vision half is taken) or a vision-only one.
    The `<image>` token is added to the LLM's tokenizer when missing (the embeddings grow by one row).
    """
    vision, llm = checkpoint_location(vision, "vision model"), checkpoint_location(llm, "LLM")
    tokenizer = composition_tokenizer(llm)
    language_model = loading(llm, "LLM", lambda: AutoModelForCausalLM.from_pretrained(llm, dtype=DTYPES[dtype]))
    if len(tokenizer) > language_model.get_input_embeddings().num_embeddings:
        language_model.resize_token_embeddings(len(tokenizer))

    vision_config = loading(vision, "vision model", lambda: AutoConfig.from_pretrained(vision))
    vision_config = getattr(vision_config, "vision_config", vision_config)
    vision_tower = loading(vision, "vision model",
                           lambda: AutoModel.from_pretrained(vision, config=vision_config, dtype=DTYPES[dtype]))
    config = composition_config(vision_config, language_model.config, image_token_id(tokenizer), vision_feature_layer)
    with torch.device("meta"):  # no second copy of the weights: the loaded modules are put in place
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision_tower
    model.model.language_model = language_model.model
    model.lm_head = language_model.lm_head
    model.model.multi_modal_projector = LlavaMultiModalProjector(config)
    for module in model.model.multi_modal_projector.modules():
        model._init_weights(module)
    model.to(DTYPES[dtype])
    if tokenizer.chat_template is None:
        raise ModelError(f"LLM tokenizer {llm!s} has no chat template; use an instruct/chat checkpoint")
    image_processor = loading(vision, "vision model",
                              lambda: AutoImageProcessor.from_pretrained(vision, use_fast=False))
    processor = llava_processor(config, tokenizer, image_processor)
    return model.eval(), processor
