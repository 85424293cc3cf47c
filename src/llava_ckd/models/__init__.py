"""Build and load LLaVA-style VLMs: checkpoints, vision + LLM composition, tiny presets."""

from llava_ckd.models.build import build_preset, compose_vlm, load_vlm
from llava_ckd.models.parts import PARTS, set_trainable
from llava_ckd.models.presets import PRESETS
from llava_ckd.models.processors import without_video
from llava_ckd.models.tokenizer import train_tokenizer

__all__ = ["PARTS", "PRESETS", "build_preset", "compose_vlm", "load_vlm", "set_trainable", "train_tokenizer",
           "without_video"]
