"""Greedy, batched answer generation: left padding and the KV cache, same answers as one at a time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm
from transformers import PreTrainedModel, ProcessorMixin

from llava_ckd.data.conversations import image_token_count, prompt_text
from llava_ckd.models.tokenizer import IMAGE_TOKEN


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    image: Path | None = None


class AnswerGenerator:
    def __init__(self, model: PreTrainedModel, processor: ProcessorMixin, max_new_tokens: int = 128):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokens_per_image = image_token_count(processor)
        self.max_new_tokens = max_new_tokens

    def _inputs(self, requests: list[GenerationRequest]) -> dict[str, torch.Tensor]:
        texts = [
            prompt_text(self.tokenizer, (IMAGE_TOKEN + "\n" if r.image else "") + r.prompt, self.tokens_per_image)
            for r in requests
        ]
        inputs = dict(self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                                     add_special_tokens=False))
        images = []
        for request in requests:
            if request.image is not None:
                with Image.open(request.image) as image:
                    images.append(image.convert("RGB"))
        if images:
            pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
            inputs["pixel_values"] = pixels.to(self.model.dtype)
        return inputs

    @torch.inference_mode()
    def answer(self, requests: list[GenerationRequest]) -> list[str]:
        inputs = self._inputs(requests)
        output = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def generate_answers(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    requests: list[GenerationRequest],
    batch_size: int = 16,
    max_new_tokens: int = 128,
) -> list[str]:
    generator = AnswerGenerator(model, processor, max_new_tokens)
    answers: list[str] = []
    with tqdm(total=len(requests), desc="generating", unit="question") as progress:
        for start in range(0, len(requests), batch_size):
            batch = requests[start : start + batch_size]
            answers.extend(generator.answer(batch))
            progress.update(len(batch))
    return answers
