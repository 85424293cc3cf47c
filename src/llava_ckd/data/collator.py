"""Batches of samples: right-padded ids and labels, an attention mask, and the batch's images.

For distillation a batch can also carry each sample's position in the dataset (`sample_index`,
to look up cached Teacher signals) and the Teacher's own inputs (`teacher_*`), for a Teacher that
expands an image into a different number of tokens or preprocesses images differently.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from transformers import ProcessorMixin

from llava_ckd.data.conversations import IGNORE_INDEX, DataError, Sample, image_token_count
from llava_ckd.models.tokenizer import IMAGE_TOKEN

TEACHER_PREFIX = "teacher_"


class ConversationDataset(Dataset):
    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return replace(self.samples[index], index=index)


def reexpand_image_tokens(sample: Sample, image_token_id: int, tokens_per_image: int, new_tokens_per_image: int
                          ) -> Sample:
    """The sample with each image's run of `tokens_per_image` image tokens resized to `new_tokens_per_image`."""
    input_ids, labels = [], []
    for is_image, run in itertools.groupby(zip(sample.input_ids, sample.labels, strict=True),
                                           key=lambda pair: pair[0] == image_token_id):
        run = list(run)
        if not is_image:
            input_ids += [token for token, _ in run]
            labels += [label for _, label in run]
            continue
        images, rest = divmod(len(run), tokens_per_image)
        if rest:
            raise ValueError(f"sample {sample.sample_id}: a run of {len(run)} image tokens is not a whole number "
                             f"of images of {tokens_per_image} tokens")
        input_ids += [image_token_id] * (images * new_tokens_per_image)
        labels += [IGNORE_INDEX] * (images * new_tokens_per_image)
    return replace(sample, input_ids=input_ids, labels=labels)


@dataclass(frozen=True)
class TeacherView:
    """How a Teacher's inputs differ from the Student's: image tokens per image, and image preprocessing."""

    image_token_id: int
    student_tokens_per_image: int
    teacher_tokens_per_image: int
    image_processor: object
    """The Teacher's."""

    @classmethod
    def between(cls, student: ProcessorMixin, teacher: ProcessorMixin) -> TeacherView | None:
        """The view for this pair of processors, or None when the Teacher can read the Student's batch as it is."""
        student_tokens, teacher_tokens = image_token_count(student), image_token_count(teacher)
        same_images = student.image_processor.to_dict() == teacher.image_processor.to_dict()
        if student_tokens == teacher_tokens and same_images:
            return None
        image_token_id = student.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        return cls(image_token_id, student_tokens, teacher_tokens, teacher.image_processor)

    def sample(self, sample: Sample) -> Sample:
        return reexpand_image_tokens(sample, self.image_token_id, self.student_tokens_per_image,
                                     self.teacher_tokens_per_image)


IMAGE_CACHE_BYTES = 1 << 30


def cacheable_images(image_processor, budget_bytes: int = IMAGE_CACHE_BYTES) -> int:
    """How many processed images fit in `budget_bytes`: all of the demo's 32 px ones, about 600 at 384 px."""
    probe = image_processor(Image.new("RGB", (8, 8)), return_tensors="pt")["pixel_values"][0]
    return budget_bytes // (probe.numel() * probe.element_size())


def pixel_loader(image_processor, cache_images: int = 0) -> Callable[[Path], torch.Tensor]:
    """Image file -> pixel values [3, H, W]; the last `cache_images` results are kept."""

    def pixels(path: Path) -> torch.Tensor:
        try:
            with Image.open(path) as image:
                return image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"{path}: image unreadable ({error}); it was readable when the conversations were "
                            "checked, so it changed during the run: rerun to check the data again") from None

    return lru_cache(maxsize=cache_images)(pixels) if cache_images else pixels


class Collator:
    """Pads a list of `Sample`s; pixel values of all images in the batch, in order, or none."""

    def __init__(self, processor: ProcessorMixin, pad_token_id: int, cache_images: int = 0, *,
                 with_sample_index: bool = False, teacher: TeacherView | None = None):
        self.pad_token_id = pad_token_id
        self.pixels = pixel_loader(processor.image_processor, cache_images)
        self.with_sample_index = with_sample_index
        self.teacher = teacher
        self.teacher_pixels = pixel_loader(teacher.image_processor, cache_images) if teacher else None

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        batch = self.pad(samples, self.pixels)
        if self.with_sample_index:
            if any(sample.index is None for sample in samples):
                raise ValueError("sample_index needs samples taken from a ConversationDataset")
            batch["sample_index"] = torch.tensor([sample.index for sample in samples])
        if self.teacher is not None:
            teacher_batch = self.pad([self.teacher.sample(sample) for sample in samples], self.teacher_pixels)
            batch |= {TEACHER_PREFIX + name: value for name, value in teacher_batch.items()}
        return batch

    def pad(self, samples: list[Sample], pixels: Callable[[Path], torch.Tensor]) -> dict[str, torch.Tensor]:
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
            batch["pixel_values"] = torch.stack([pixels(path) for path in images])
        return batch
