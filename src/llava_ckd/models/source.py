"""Where a model comes from, as a recipe or stage file names it: the schema every loader reads (below everything
that loads models, so that loading never reaches up to the configuration of stages)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from llava_ckd.models.presets import PRESETS


class Strict(BaseModel):
    """A schema that refuses unknown fields; the docstring under each field is its help text."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ModelSource(Strict):
    """Exactly one of: a checkpoint (`path`), a composition (`vision` + `llm`), or a tiny `preset`."""

    path: str | None = None
    """A VLM checkpoint: a local folder, or a hub id already in the local cache."""
    vision: str | None = None
    """With `llm`: a vision tower (CLIP or SigLIP checkpoint) to compose with an LLM through a fresh projector."""
    llm: str | None = None
    """With `vision`: the LLM checkpoint of the composition."""
    vision_feature_layer: int = -2
    """The vision tower's layer whose features the projector reads (LLaVA's -2: the second to last)."""
    preset: str | None = None
    """A tiny model built from its config (tests and the demo): tiny-student, tiny-ta, tiny-teacher, ..."""
    tokenizer: Path | None = None
    """A preset's tokenizer folder."""
    vision_init: Path | None = None
    """A preset's vision tower weights (the demo's shared encoder)."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """The precision the weights are loaded in."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        sources = [self.path is not None, self.vision is not None or self.llm is not None, self.preset is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of: path, vision + llm, preset")
        if (self.vision is None) != (self.llm is None):
            raise ValueError("composition needs both vision and llm")
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
            if self.tokenizer is None:
                raise ValueError("a preset needs a tokenizer folder")
        elif self.vision_init is not None:
            raise ValueError("vision_init applies to presets only")
        return self
