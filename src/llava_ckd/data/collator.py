"""Batches of samples: right-padded ids and labels, an attention mask, and the batch's images."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import ProcessorMixin

from llava_ckd.data.conversations import IGNORE_INDEX, Sample


class ConversationDataset(Dataset):
    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


class Collator:
    """Pads a list of `Sample`s; pixel values of all images in the batch, in order, or none."""

    def __init__(self, processor: ProcessorMixin, pad_token_id: int, cache_images: int = 0):
        self.image_processor = processor.image_processor
        self.pad_token_id = pad_token_id
        self.pixels = lru_cache(maxsize=cache_images)(self._pixels) if cache_images else self._pixels

    def _pixels(self, path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            return self.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        length = max(len(s.input_ids) for s in samples)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample.input_ids)
            input_ids[row, :n] = torch.tensor(sample.input_ids)
            labels[row, :n] = torch.tensor(sample.labels)
            attention_mask[row, :n] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        images = [path for sample in samples for path in sample.images]
        if images:
            batch["pixel_values"] = torch.stack([self.pixels(path) for path in images])
        return batch
