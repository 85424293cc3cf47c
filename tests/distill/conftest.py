"""Tiny Student/Teacher pairs and batches from the colour dataset, shared by the distillation-stage tests."""

from __future__ import annotations

import pytest
from transformers import LlavaForConditionalGeneration

from llava_ckd.data.collator import Collator, ConversationDataset, TeacherView
from llava_ckd.data.conversations import load_conversations
from llava_ckd.models import build_preset
from llava_ckd.models.build import image_token_id, llava_processor, preset_image_processor
from llava_ckd.models.presets import preset_config
from tests.conftest import colour_records, write_dataset

MAX_LENGTH = 64
COARSE_PATCH = 16
"""A Teacher vision tower with 16 px patches sees 4 image tokens where the presets see 16."""


def coarse_teacher(tokenizer, seed=2):
    """A tiny-ta whose vision tower cuts 32 px images into 4 patches (the presets: 16)."""
    config = preset_config("tiny-ta", len(tokenizer), image_token_id(tokenizer), tokenizer.pad_token_id)
    config.vision_config.patch_size = COARSE_PATCH
    config.image_seq_length = 4
    processor = llava_processor(config, tokenizer, preset_image_processor(config.vision_config))
    return LlavaForConditionalGeneration(config).eval(), processor


@pytest.fixture(scope="module")
def pair(tokenizer):
    """(Student, its processor, Teacher with the same image tokens)."""
    student, processor = build_preset("tiny-student", tokenizer, seed=0)
    teacher, _ = build_preset("tiny-ta", tokenizer, seed=1)
    return student, processor, teacher


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("colours"), colour_records(8))


def load_dataset(path, processor, max_length=MAX_LENGTH) -> ConversationDataset:
    samples, _ = load_conversations(path, path.parent / "images", processor, max_length)
    return ConversationDataset(samples)


def collate(dataset, processor, indices, *, with_sample_index=False, teacher=None):
    """A batch of `dataset`'s samples at `indices`; `teacher`: (the Teacher's dataset of the same file, processor)."""
    view = TeacherView.between(dataset.samples, processor, teacher[0].samples, teacher[1]) if teacher else None
    collator = Collator(processor, processor.tokenizer.pad_token_id, with_sample_index=with_sample_index, teacher=view)
    return collator([dataset[i] for i in indices])
