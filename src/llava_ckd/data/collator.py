"""Batches of samples: right-padded ids and labels, an attention mask, and the batch's image inputs.

Image inputs are what the processor's image processor makes of each image (pixel values, and for some families a
grid or tile mask), joined over the batch's images in order, plus `image_token_counts`: how many image tokens
each image expanded into, which the visual losses group by. For distillation a batch can also carry each sample's
position in the dataset (`sample_index`, to look up cached Teacher signals) and the Teacher's own inputs
(`teacher_*`), for a Teacher with its own chat template, image tokens or image preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from transformers import ProcessorMixin

from llava_ckd.data.conversations import IGNORE_INDEX, load_rgb
from llava_ckd.data.samples import Sample
from llava_ckd.files import DataError

TEACHER_PREFIX = "teacher_"
IMAGE_TOKEN_COUNTS = "image_token_counts"


class ConversationDataset(Dataset):
    def __init__(self, samples: Sequence[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return replace(self.samples[index], index=index)


def response_ids(sample: Sample) -> list[int]:
    return [label for label in sample.labels if label != IGNORE_INDEX]


def first_labels(labels: list[int], count: int) -> list[int]:
    """`labels` with only the first `count` answer tokens kept."""
    kept = []
    for label in labels:
        keep = label != IGNORE_INDEX and count > 0
        count -= keep
        kept.append(label if keep else IGNORE_INDEX)
    return kept


@dataclass(frozen=True)
class TeacherView:
    """The Teacher's own encoding of the Student's samples (its chat template, image tokens, preprocessing)."""

    samples: Sequence[Sample]
    """The Teacher's samples, in their own order."""
    processor: ProcessorMixin
    """The Teacher's."""
    rows: list[int]
    """The Teacher's sample of each of the Student's, by the Student's dataset index."""
    kept_answer_tokens: dict[int, int]
    """Where max_length cut the Student's answer short: how many of the Teacher's answer tokens are kept."""

    def sample(self, index: int) -> Sample:
        theirs = self.samples[self.rows[index]]
        if index in self.kept_answer_tokens:
            theirs = replace(theirs, labels=first_labels(theirs.labels, self.kept_answer_tokens[index]))
        return theirs

    @classmethod
    def between(cls, student_samples: Sequence[Sample], student: ProcessorMixin, teacher_samples: Sequence[Sample],
                teacher: ProcessorMixin) -> TeacherView | None:
        """The view for this pair, or None when the Teacher can read the Student's batches as they are.

        Both must keep the same records and encode the same assistant tokens: response KD pairs them token
        for token. Where max_length cut a Student's sample short, the Teacher's answer tokens beyond the Student's
        are left out. Both sets of samples are read once, in order (each keeps its records in file order).
        """
        rows, kept_answer_tokens, same_inputs = [], {}, True
        theirs_in_order = enumerate(teacher_samples)
        for index, sample in enumerate(student_samples):
            row, theirs = next(((row, theirs) for row, theirs in theirs_in_order if theirs.record >= sample.record),
                               (None, None))
            if theirs is None or theirs.record != sample.record:
                raise DataError(f"sample {sample.sample_id} (record {sample.record}) is kept for the Student but "
                                "skipped for the Teacher (see the Teacher's data report): both must see the same "
                                "samples")
            ours_ids, theirs_ids = response_ids(sample), response_ids(theirs)
            if sample.truncated and theirs_ids[:len(ours_ids)] == ours_ids:  # max_length cut the Student's answer
                kept_answer_tokens[index] = len(ours_ids)
            elif theirs_ids != ours_ids:
                raise DataError(f"sample {sample.sample_id}: the Teacher's chat template and tokenizer give other "
                                f"assistant tokens ({len(theirs_ids)}) than the Student's "
                                f"({len(ours_ids)}); response KD pairs them token for token")
            rows.append(row)
            same_inputs = same_inputs and sample.input_ids == theirs.input_ids and index not in kept_answer_tokens
        if same_inputs and student.image_processor.to_dict() == teacher.image_processor.to_dict():
            return None
        return cls(teacher_samples, teacher, rows, kept_answer_tokens)


IMAGE_CACHE_BYTES = 1 << 30


def image_inputs(processor: ProcessorMixin, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """The model inputs the processor's image processor makes of `images`, one image at a time, joined along the
    first axis."""
    per_image = [processor.image_processor(images=[image], return_tensors="pt") for image in images]
    names = [name for name in processor.model_input_names if name in per_image[0]]
    return {name: join([inputs[name] for inputs in per_image]) for name in names}


def modality_inputs(processor: ProcessorMixin, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-token modality ids some processors add to the text inputs (Qwen-VL's M-RoPE reads them, Gemma 3's
    attention over image tokens), under the name the processor gives them; none for the others."""
    if not type(processor).return_mm_token_type_ids:
        return {}
    name = "mm_token_type_ids" if "mm_token_type_ids" in processor.model_input_names else "token_type_ids"
    return {name: torch.tensor(processor.create_mm_token_type_ids(input_ids.tolist()))}


def join(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the first axis; tensors whose other axes differ (a different number of tiles per
    image) are zero-padded to the largest, as the families' own processors pad them."""
    shape = [max(sizes) for sizes in zip(*(t.shape[1:] for t in tensors), strict=True)]
    padded = []
    for tensor in tensors:
        widths = [width for size, target in zip(reversed(tensor.shape[1:]), reversed(shape), strict=True)
                  for width in (0, target - size)]
        padded.append(F.pad(tensor, widths) if any(widths) else tensor)
    return torch.cat(padded)


def cacheable_images(processor: ProcessorMixin, budget_bytes: int = IMAGE_CACHE_BYTES) -> int:
    """How many processed images fit in `budget_bytes`: all of the demo's 32 px ones, about 600 at 384 px."""
    probe = image_inputs(processor, [Image.new("RGB", (8, 8))])["pixel_values"]
    return max(1, budget_bytes // (probe.numel() * probe.element_size()))


def image_loader(processor: ProcessorMixin, cache_images: int = 0) -> Callable[[Path], dict[str, torch.Tensor]]:
    """Image file -> its model inputs (leading axis 1); the last `cache_images` results are kept."""

    def inputs(path: Path) -> dict[str, torch.Tensor]:
        try:
            image = load_rgb(path)
        except OSError as error:  # PIL's UnidentifiedImageError too
            raise DataError(f"{path}: image unreadable ({error}); it was readable when the conversations were "
                            "checked, so it changed during the run: rerun to check the data again") from None
        return image_inputs(processor, [image])

    return lru_cache(maxsize=cache_images)(inputs) if cache_images else inputs


class Collator:
    """Pads a list of `Sample`s; pixel values of all images in the batch, in order, or none."""

    def __init__(self, processor: ProcessorMixin, pad_token_id: int, cache_images: int = 0, *,
                 with_sample_index: bool = False, teacher: TeacherView | None = None):
        self.pad_token_id = pad_token_id
        self.processor = processor
        self.images = image_loader(processor, cache_images)
        self.with_sample_index = with_sample_index
        self.teacher = teacher
        self.teacher_images = image_loader(teacher.processor, cache_images) if teacher else None

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        batch = self.pad(samples, self.images, self.processor, self.pad_token_id)
        if self.with_sample_index:
            if any(sample.index is None for sample in samples):
                raise ValueError("sample_index needs samples taken from a ConversationDataset")
            batch["sample_index"] = torch.tensor([sample.index for sample in samples])
        if self.teacher is not None:
            teacher_batch = self.pad([self.teacher.sample(sample.index) for sample in samples], self.teacher_images,
                                     self.teacher.processor, self.teacher.processor.tokenizer.pad_token_id)
            batch |= {TEACHER_PREFIX + name: value for name, value in teacher_batch.items()}
        return batch

    @staticmethod
    def pad(samples: list[Sample], images: Callable[[Path], dict[str, torch.Tensor]], processor: ProcessorMixin,
            pad_token_id: int) -> dict[str, torch.Tensor]:
        length = max(len(s.input_ids) for s in samples)
        input_ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample.input_ids)
            input_ids[row, :n] = torch.tensor(sample.input_ids)
            labels[row, :n] = torch.tensor(sample.labels)
            attention_mask[row, :n] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        batch |= modality_inputs(processor, input_ids)
        paths = [path for sample in samples for path in sample.images]
        if paths:
            inputs = [images(path) for path in paths]
            batch |= {name: join([image[name] for image in inputs]) for name in inputs[0]}
            batch[IMAGE_TOKEN_COUNTS] = torch.tensor([count for sample in samples for count in sample.image_tokens])
        return batch
