"""The `Trainer` every stage runs on."""

from __future__ import annotations

from transformers import Trainer


class StageTrainer(Trainer):
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Restore weights through `from_pretrained`, which maps checkpoint keys back to module names.

        `Trainer` writes checkpoints with `save_pretrained` in the original key layout (LLaVA's
        `language_model.model.*`), but its own resume path loads them with a plain non-strict
        `load_state_dict`, which for LLaVA models matches no key and silently keeps the current weights.
        """
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        model = self.accelerator.unwrap_model(model or self.model)
        restored = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype)
        model.load_state_dict(restored.state_dict())
