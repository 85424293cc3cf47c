"""A checkpoint's processor; where its video processor cannot be built, the same processor without it.

Qwen2.5-VL, Qwen3-VL, InternVL and LLaVA-OneVision processors hold a video processor, which `transformers` builds
only with torchvision. This framework feeds images and text only, so such a processor is then built from the
checkpoint's image processor, tokenizer and chat template alone: the family's own processor class, whose image and
text code is unchanged, with one log line saying so.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path

from transformers import AutoProcessor, PreTrainedConfig, ProcessorMixin
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
from transformers.utils import VIDEO_PROCESSOR_NAME
from transformers.video_processing_utils import BaseVideoProcessor

log = logging.getLogger(__name__)

VIDEO = "video_processor"


@cache
def without_video(processor_class: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """`processor_class` with no video processor among its parts (`get_attributes`): it is built, saved and loaded
    from its other parts, and processes images and text with `processor_class`'s own code. Saved, it names
    `processor_class`, and its folder names the video processor for machines with torchvision (`save_pretrained`)."""

    class ImagesAndText(processor_class):
        video_processor_config: dict | None = None
        """The settings of the checkpoint's video processor, written back when saved; none when built in code."""

        @classmethod
        def get_attributes(cls) -> list[str]:
            return [name for name in super().get_attributes() if name != VIDEO]

        def save_pretrained(self, save_directory, **kwargs):
            """Also the video processor's settings, as read from the checkpoint (`video_preprocessor_config.json`),
            or, for a processor built in code, the image processor's config file, from which `AutoVideoProcessor`
            infers the video processor as it does for released checkpoints without one; so plain `AutoProcessor`
            loads the folder where torchvision is installed."""
            saved = super().save_pretrained(save_directory, **kwargs)
            if self.video_processor_config is None:
                self.image_processor.save_pretrained(save_directory)
            else:
                (Path(save_directory) / VIDEO_PROCESSOR_NAME).write_text(
                    json.dumps(self.video_processor_config, indent=2, sort_keys=True) + "\n")
            return saved

    ImagesAndText.__name__ = ImagesAndText.__qualname__ = processor_class.__name__
    return ImagesAndText


def video_processor_config(location: str) -> dict | None:
    """The video processor settings the checkpoint at `location` holds, read without building the processor."""
    try:
        return BaseVideoProcessor.get_video_processor_dict(location)[0]
    except OSError:
        return None


def load_processor(location: str, config: PreTrainedConfig) -> ProcessorMixin:
    """`AutoProcessor` for the checkpoint at `location` (of model config `config`); when that fails and the family's
    processor loads without its video processor, that one (logged with the reason). Any other failure is raised."""
    try:
        return AutoProcessor.from_pretrained(location)
    except (ImportError, OSError, ValueError) as error:  # how AutoVideoProcessor fails without torchvision
        processor_class = PROCESSOR_MAPPING.get(type(config), None)
        if processor_class is None or VIDEO not in processor_class.get_attributes():
            raise
        try:
            processor = without_video(processor_class).from_pretrained(location)
        except Exception:
            raise error from None
        processor.video_processor_config = video_processor_config(location)
        reason = " ".join(str(error).split()).split(". ")[0]
        log.warning("%s: the video processor of %s cannot be built (%s); using %s without it (images and text are "
                    "processed as with it, videos are not)", location, processor_class.__name__, reason,
                    processor_class.__name__)
        return processor


def processor_image_token_id(processor: ProcessorMixin) -> int:
    """The id of the token the model puts image features at (Gemma 3's processor matches `<start_of_image>`,
    but its model reads the `<image_soft_token>`s the tokenizer names)."""
    token_id = getattr(processor.tokenizer, "image_token_id", None)
    return token_id if token_id is not None else processor.image_token_id
