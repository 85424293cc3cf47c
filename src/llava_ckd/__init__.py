"""llava-ckd: bottom-up cascaded knowledge distillation for LLaVA-style VLMs."""

__version__ = "0.1.0"
