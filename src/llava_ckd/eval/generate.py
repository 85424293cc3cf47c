"""Greedy, batched answer generation: left padding and the KV cache, same answers as one at a time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, ProcessorMixin

from llava_ckd.data.collator import image_inputs, modality_inputs
from llava_ckd.data.conversations import ConversationEncoder, load_rgb
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
        self.encoder = ConversationEncoder(processor, image_folder=None, max_length=0)
        self.max_new_tokens = max_new_tokens

    def _inputs(self, requests: list[GenerationRequest]) -> dict[str, torch.Tensor]:
        images = [load_rgb(r.image) if r.image is not None else None for r in requests]
        texts = [self.encoder.prompt((IMAGE_TOKEN + "\n" if image else "") + r.prompt, [image] if image else [])
                 for r, image in zip(requests, images, strict=True)]
        inputs = dict(self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                                     add_special_tokens=False))
        inputs |= modality_inputs(self.processor, inputs["input_ids"])
        present = [image for image in images if image is not None]
        if present:
            inputs |= image_inputs(self.processor, present)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    @torch.inference_mode()
    def answer_ids(self, requests: list[GenerationRequest]) -> list[list[int]]:
        """The generated token ids of each request, up to and without its end-of-turn token."""
        inputs = self._inputs(requests)
        output = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        answers = []
        for row in output[:, inputs["input_ids"].shape[1]:].tolist():
            end = row.index(self.tokenizer.eos_token_id) if self.tokenizer.eos_token_id in row else len(row)
            answers.append(row[:end])
        return answers

    @torch.inference_mode()
    def answer_log_probs(self, request: GenerationRequest, candidates: list[str]) -> dict[str, float]:
        """log P(candidate, then the end-of-turn token | prompt) under the model, for each candidate answer,
        in one forward pass over all of them (the prompt as `answer` builds it, the answer tokenised on its own,
        as it follows the assistant's turn start in training)."""
        inputs = self._inputs([request])
        prompt = inputs["input_ids"][0]
        text_inputs = {"input_ids", "attention_mask", *modality_inputs(self.processor, prompt[None])}
        image = {name: value for name, value in inputs.items() if name not in text_inputs}
        answers = [torch.tensor(self.tokenizer(candidate + self.tokenizer.eos_token,
                                               add_special_tokens=False)["input_ids"]) for candidate in candidates]
        length = len(prompt) + max(len(answer) for answer in answers)
        input_ids = torch.full((len(answers), length), self.tokenizer.pad_token_id)
        attention_mask = torch.zeros_like(input_ids)
        for row, answer in enumerate(answers):
            input_ids[row, : len(prompt) + len(answer)] = torch.cat([prompt, answer])
            attention_mask[row, : len(prompt) + len(answer)] = 1
        batch = {name: value.repeat(len(answers), *[1] * (value.dim() - 1)) for name, value in image.items()}
        batch |= {"input_ids": input_ids, "attention_mask": attention_mask}
        batch |= modality_inputs(self.processor, input_ids)
        logits = self.model(**batch).logits
        log_probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)
        scores = {}
        for row, (candidate, answer) in enumerate(zip(candidates, answers, strict=True)):
            positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(answer))
            scores[candidate] = log_probs[row, positions, answer].sum().item()
        return scores

    def answer(self, requests: list[GenerationRequest]) -> list[str]:
        decoded = self.tokenizer.batch_decode(self.answer_ids(requests), skip_special_tokens=True)
        return [text.strip() for text in decoded]
