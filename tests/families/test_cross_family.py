"""Qwen2.5-VL, Qwen3-VL and InternVL inputs written out from each family's processor code, against the processor
`load_vlm` builds (without torchvision: the family's class without its video processor); and a Qwen2.5-VL Teacher
distilling a TinyLLaVA-style SigLIP + Qwen2 Student on one base vocabulary.

Written out: the family's chat template (tests/fixtures/chat_templates/), each image placeholder replaced by the
family's expansion (`replace_image_token` of its processor: Qwen-VL repeats `<|image_pad|>` once per merged patch of
the image's grid, `image_grid_thw.prod() // merge_size**2`; InternVL writes `<img>`, `image_seq_length`
`<IMG_CONTEXT>` per tile of the image, `</img>`), the image processor's outputs, and the modality ids Qwen-VL's
M-RoPE reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava_ckd.data.collator import TEACHER_PREFIX, Collator, ConversationDataset
from llava_ckd.data.conversations import IGNORE_INDEX, content_parts, render_with_answer_spans, tokens_and_labels
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller
from llava_ckd.distill.positions import model_inputs
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.terms import loss_terms
from llava_ckd.distill.vocab import shared_vocabulary
from llava_ckd.models import build_preset
from llava_ckd.models.build import load_vlm
from tests.distill.conftest import load_dataset
from tests.families.conftest import (
    FAMILIES,
    QWEN_VL_TOKENS,
    TEMPLATES,
    internvl_image_processor,
    qwen25_vl_model,
    qwen_vl_image_processor,
    save,
)
from tests.tolerance import assert_float32_close, loss_reductions

SPEC = DivergenceSpec(name="jsd", temperature=2.0, beta=0.3)
SIZES = [(32, 32), (64, 40), (40, 72)]


@pytest.fixture(scope="module")
def qwen_tokenizer(tokenizer_dir):
    """The tests' tokenizer with Qwen-VL's vision tokens added: one base vocabulary, other added special tokens."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_VL_TOKENS.values())})
    return tokenizer


@dataclass(frozen=True)
class Written:
    """How a family's processor turns a conversation's images into text and model inputs, written out."""

    template: str
    image_token: str
    """What the template writes for an image, and what the processor replaces with the image's expansion."""
    image_processor: object
    image_inputs: tuple[str, ...]

    def expansions(self, encoded) -> list[str]:
        if "image_grid_thw" in encoded:
            counts = encoded["image_grid_thw"].prod(-1) // self.image_processor.merge_size**2
            return ["<|image_pad|>" * count for count in counts.tolist()]
        return [f"<img>{'<IMG_CONTEXT>' * 4 * tiles}</img>" for tiles in encoded["num_patches"].tolist()]


QWEN_VL = Written("qwen2_vl.jinja", "<|image_pad|>", qwen_vl_image_processor(),
                  ("pixel_values", "image_grid_thw"))
INTERNVL = Written("internvl.jinja", "<IMG_CONTEXT>", internvl_image_processor(), ("pixel_values",))
WRITTEN = {"qwen2.5-vl": QWEN_VL, "qwen3-vl": QWEN_VL, "internvl": INTERNVL}


def images_of(sizes) -> list[Image.Image]:
    generator = torch.Generator().manual_seed(len(sizes))
    return [Image.fromarray(torch.randint(0, 255, (height, width, 3), generator=generator, dtype=torch.uint8)
                            .numpy()) for width, height in sizes]


def written_inputs(tokenizer, family: Written, conversations: list[tuple[list[Image.Image], str, str]]
                   ) -> dict[str, torch.Tensor]:
    """A right-padded batch of (images, question, answer) conversations, as the family's processor makes it."""
    template = (TEMPLATES / family.template).read_text()
    image_token = tokenizer.convert_tokens_to_ids(family.image_token)
    rows, label_rows, image_inputs, counts = [], [], [], []
    for images, question, answer in conversations:
        messages = [{"role": "user", "content": [{"type": "image"}] * len(images) + content_parts(question)},
                    {"role": "assistant", "content": content_parts(answer)}]
        text, spans = render_with_answer_spans(tokenizer, template, messages)
        if images:
            encoded = family.image_processor(images=images, return_tensors="pt")
            image_inputs.append(encoded)
            pieces = text.split(family.image_token)
            expansions = family.expansions(encoded)
            text = pieces[0] + "".join(expansion + piece for expansion, piece in zip(expansions, pieces[1:],
                                                                                     strict=True))
            shift = sum(len(expansion) - len(family.image_token) for expansion in expansions)
            spans = [(start + shift, end + shift) for start, end in spans]  # images come before the answer
            counts += [tokenizer(expansion)["input_ids"].count(image_token) for expansion in expansions]
        ids, labels = tokens_and_labels(tokenizer, text, spans)
        rows.append(ids)
        label_rows.append(labels)
    length = max(map(len, rows))
    batch = {
        "input_ids": torch.tensor([row + [tokenizer.pad_token_id] * (length - len(row)) for row in rows]),
        "attention_mask": torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in rows]),
        "labels": torch.tensor([row + [IGNORE_INDEX] * (length - len(row)) for row in label_rows]),
    }
    if family is QWEN_VL:
        batch["mm_token_type_ids"] = (batch["input_ids"] == image_token).long()
    if image_inputs:
        batch |= {name: torch.cat([inputs[name] for inputs in image_inputs]) for name in family.image_inputs}
        batch["image_token_counts"] = torch.tensor(counts)
    return batch


CONVERSATIONS = [(SIZES[:2], "How many objects are there?", "2"), (SIZES[2:], "What colour is the image?", "red"),
                 ([], "Describe the image briefly.", "A red circle.")]
IMAGE_TOKENS = {
    "qwen2.5-vl": [4, 6, 6],  # 56x56, 56x84 and 84x56 px after resizing, / 14² per patch / 2x2 merged
    "qwen3-vl": [4, 6, 6],
    "internvl": [4, 12, 12],  # 4 per 32 px tile: one tile for the square image, 2 and a thumbnail for the others
}


@pytest.mark.parametrize("name", list(WRITTEN))
def test_the_loaded_processor_gives_the_familys_prompts_and_image_inputs(name, tmp_path):
    """`load_vlm`'s processor (without torchvision: the family's class without its video processor), through the
    data path, gives the inputs written out from the family's chat template, expansion and image processor."""
    save(*FAMILIES[name].build(32, 0), tmp_path / "model")
    _, processor = load_vlm(tmp_path / "model")
    (tmp_path / "images").mkdir()
    records = []
    for index, (sizes, question, answer) in enumerate(CONVERSATIONS):
        names = [f"{index}-{number}.png" for number in range(len(sizes))]
        for file, image in zip(names, images_of(sizes), strict=True):
            image.save(tmp_path / "images" / file)
        records.append({"id": str(index), "image": names, "conversations": [
            {"from": "human", "value": "<image>\n" * len(sizes) + question}, {"from": "gpt", "value": answer}]})
    (tmp_path / "train.json").write_text(json.dumps(records))

    dataset = load_dataset(tmp_path / "train.json", processor, max_length=512)
    batch = Collator(processor, processor.tokenizer.pad_token_id)(dataset.samples)
    written = written_inputs(processor.tokenizer, WRITTEN[name],
                             [(images_of(sizes), question, answer) for sizes, question, answer in CONVERSATIONS])

    assert batch.keys() == written.keys()
    for key, value in written.items():
        assert torch.equal(batch[key], value), key
    assert batch["image_token_counts"].tolist() == IMAGE_TOKENS[name]


@pytest.fixture(scope="module")
def cross_family(tokenizer, qwen_tokenizer, tmp_path_factory):
    """A Qwen2.5-VL Teacher and a SigLIP + Qwen2 LLaVA Student, and a batch with each model's own inputs."""
    from tests.conftest import colour_records, write_dataset

    data = write_dataset(tmp_path_factory.mktemp("colours"), colour_records(4))
    student, processor = build_preset("tiny-qwen2-siglip", tokenizer, seed=0)
    dataset = ConversationDataset(load_dataset(data, processor, max_length=128).samples)
    batch = Collator(processor, tokenizer.pad_token_id)([dataset[i] for i in range(4)])
    batch["labels"] = first_answer_only(batch["labels"])  # the Qwen side below renders the first question only
    images = [Image.open(path).convert("RGB") for sample in dataset.samples for path in sample.images]
    teacher_batch = written_inputs(qwen_tokenizer, QWEN_VL, [
        ([image], "What colour is the image?", f"{answer}") for image, answer in
        zip(images, ["red", "green", "blue", "yellow"], strict=True)])
    return student, qwen25_vl_model(qwen_tokenizer, 64, 1), batch, teacher_batch


def test_qwen25_vl_teacher_distils_a_siglip_qwen2_student_token_for_token(cross_family, tokenizer, qwen_tokenizer):
    student, teacher, student_batch, teacher_batch = cross_family
    shared = shared_vocabulary(tokenizer, qwen_tokenizer)
    assert shared == len(tokenizer) and len(qwen_tokenizer) == shared + len(QWEN_VL_TOKENS)
    batch = student_batch | {TEACHER_PREFIX + name: value for name, value in teacher_batch.items()}
    assert (student_batch["input_ids"] == student.config.image_token_id).sum(1).tolist() == [16] * 4
    assert teacher_batch["image_token_counts"].tolist() == [4] * 4

    weights = loss_terms(dict(ce=0.0, response_kd=1.0))
    loss, terms = Distiller(OnlineTeacher(teacher), weights, SPEC, shared)(student, batch)

    student_logits = student(**model_inputs(student_batch)).logits[..., :shared]
    with torch.no_grad():
        teacher_logits = teacher(**model_inputs(teacher_batch)).logits[..., :shared]
    student_targets = student_batch["labels"][:, 1:] != IGNORE_INDEX
    teacher_targets = teacher_batch["labels"][:, 1:] != IGNORE_INDEX
    assert torch.equal(student_batch["labels"][:, 1:][student_targets], teacher_batch["labels"][:, 1:][teacher_targets])
    naive = SPEC(student_logits[:, :-1][student_targets], teacher_logits[:, :-1][teacher_targets]).mean()
    reductions = loss_reductions(teacher_batch, shared, student, teacher)  # the Teacher's batch is the longer
    assert_float32_close(terms["response_kd"], naive, *reductions)
    assert_float32_close(loss, naive, *reductions)


def first_answer_only(labels: torch.Tensor) -> torch.Tensor:
    """Labels of the first assistant reply of each row (the colour records' second question dropped)."""
    kept = labels.clone()
    for row in kept:
        answer = (row != IGNORE_INDEX).nonzero().flatten()
        end = answer[(answer.diff() > 1).nonzero().flatten()[0]] + 1 if (answer.diff() > 1).any() else len(row)
        row[end:] = IGNORE_INDEX
    return kept


def test_visual_and_relation_kd_across_the_two_grids_are_refused_with_one_message(cross_family, tokenizer):
    student, teacher, student_batch, teacher_batch = cross_family
    batch = student_batch | {TEACHER_PREFIX + name: value for name, value in teacher_batch.items()}
    weights = loss_terms(dict(ce=1.0, response_kd=1.0, visual_kd=1.0, relation_kd=1.0))
    with pytest.raises(ValueError, match=r"image tokens per image: Student \[16, 16, 16, 16\], Teacher \[4, 4, 4, 4\]"):
        Distiller(OnlineTeacher(teacher), weights, SPEC, len(tokenizer))(student, batch)
