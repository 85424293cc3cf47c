"""Qwen2.5-VL, Qwen3-VL and InternVL at tiny width, as Teacher and Student of the distillation losses, and a
Qwen2.5-VL Teacher distilling a TinyLLaVA-style SigLIP + Qwen2 Student on one base vocabulary.

These families' processors (`Qwen2_5_VLProcessor`, `Qwen3VLProcessor`, `InternVLProcessor`) cannot be built here:
transformers 5.24 checks their video-processor argument against a class that exists only with torchvision, which
has no CPU build on this machine's package index. So their inputs are written out here as those processors make
them: the family's chat template (tests/fixtures/chat_templates/), each image placeholder replaced by the family's
expansion (`replace_image_token` of its processor: Qwen-VL repeats `<|image_pad|>` once per merged patch of the
image's grid, `image_grid_thw.prod() // merge_size**2`; InternVL writes `<img>`, `image_seq_length` `<IMG_CONTEXT>`
per tile of the image, `</img>`), the image processor's outputs, and the modality ids Qwen-VL's M-RoPE reads. The
models, image processors, loss and vocabulary code are the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoTokenizer,
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from llava_ckd.data.collator import TEACHER_PREFIX, Collator, ConversationDataset
from llava_ckd.data.conversations import IGNORE_INDEX, content_parts, render_with_answer_spans, tokens_and_labels
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller, LossWeights
from llava_ckd.distill.positions import model_inputs
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.vocab import shared_vocabulary
from llava_ckd.models import build_preset
from tests.distill.conftest import load_dataset
from tests.families.conftest import TEMPLATES, tiny_text

QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
SPEC = DivergenceSpec(name="jsd", temperature=2.0, beta=0.3)
SIZES = [(32, 32), (64, 40), (40, 72)]


def extended(tokenizer_dir, tokens):
    """The tests' tokenizer with a family's vision tokens added: one base vocabulary, other added special tokens."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    return tokenizer


@pytest.fixture(scope="module")
def qwen_tokenizer(tokenizer_dir):
    return extended(tokenizer_dir, QWEN_TOKENS)


def token_ids(tokenizer) -> dict:
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
           zip(("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"), QWEN_TOKENS,
               strict=True)}
    return ids


def qwen25_vl(tokenizer, hidden: int, seed: int):
    config = Qwen2_5_VLConfig(
        text_config=dict(**tiny_text(len(tokenizer), tokenizer.pad_token_id, hidden),
                         rope_scaling={"type": "mrope", "mrope_section": [hidden // 32, hidden // 32, hidden // 16]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           fullatt_block_indexes=[1], window_size=56),
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, **token_ids(tokenizer))
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def qwen3_vl(tokenizer, hidden: int, seed: int):
    config = Qwen3VLConfig(
        text_config=dict(**tiny_text(len(tokenizer), tokenizer.pad_token_id, hidden), head_dim=hidden // 4,
                         rope_scaling={"rope_type": "default", "mrope_interleaved": True,
                                       "mrope_section": [hidden // 32, hidden // 32, hidden // 16]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, num_position_embeddings=64, deepstack_visual_indexes=[0]),
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, **token_ids(tokenizer))
    torch.manual_seed(seed)
    return Qwen3VLForConditionalGeneration(config).eval()


def internvl(tokenizer, hidden: int, seed: int):
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=[32, 32], patch_size=[8, 8]),
        text_config=dict(model_type="qwen2", **tiny_text(len(tokenizer), tokenizer.pad_token_id, hidden)),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4, downsample_ratio=0.5)
    torch.manual_seed(seed)
    return InternVLForConditionalGeneration(config).eval()


@dataclass(frozen=True)
class Written:
    """How a family's processor turns a conversation's images into text and model inputs, written out."""

    tokens: list[str]
    template: str
    placeholder: str
    image_processor: object
    image_inputs: tuple[str, ...]

    def expansions(self, encoded) -> list[str]:
        if "image_grid_thw" in encoded:
            counts = encoded["image_grid_thw"].prod(-1) // self.image_processor.merge_size**2
            return ["<|image_pad|>" * count for count in counts.tolist()]
        return [f"<img>{'<IMG_CONTEXT>' * 4 * tiles}</img>" for tiles in encoded["num_patches"].tolist()]


QWEN_VL = Written(QWEN_TOKENS, "qwen2_vl.jinja", "<|image_pad|>", Qwen2VLImageProcessorPil(patch_size=14, merge_size=2),
                  ("pixel_values", "image_grid_thw"))
INTERNVL = Written(INTERNVL_TOKENS, "internvl.jinja", "<IMG_CONTEXT>\n",
                   GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, max_patches=4),
                   ("pixel_values",))
FAMILIES = {"qwen2.5-vl": (qwen25_vl, QWEN_VL), "qwen3-vl": (qwen3_vl, QWEN_VL), "internvl": (internvl, INTERNVL)}


def images_of(sizes) -> list[Image.Image]:
    generator = torch.Generator().manual_seed(len(sizes))
    return [Image.fromarray(torch.randint(0, 255, (height, width, 3), generator=generator, dtype=torch.uint8)
                            .numpy()) for width, height in sizes]


def written_inputs(tokenizer, family: Written, conversations: list[tuple[list[Image.Image], str, str]]
                   ) -> dict[str, torch.Tensor]:
    """A right-padded batch of (images, question, answer) conversations, as the family's processor makes it."""
    template = (TEMPLATES / family.template).read_text()
    image_token = tokenizer.convert_tokens_to_ids(family.tokens[2])
    rows, label_rows, image_inputs, counts = [], [], [], []
    for images, question, answer in conversations:
        messages = [{"role": "user", "content": [{"type": "image"}] * len(images) + content_parts(question)},
                    {"role": "assistant", "content": content_parts(answer)}]
        text, spans = render_with_answer_spans(tokenizer, template, messages)
        if images:
            encoded = family.image_processor(images=images, return_tensors="pt")
            image_inputs.append(encoded)
            pieces = text.split(family.placeholder)
            expansions = family.expansions(encoded)
            text = pieces[0] + "".join(expansion + piece for expansion, piece in zip(expansions, pieces[1:],
                                                                                     strict=True))
            shift = sum(len(expansion) - len(family.placeholder) for expansion in expansions)
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


def naive_visual_terms(student, teacher, batch, spec):
    """Response, visual and relation KD from both models' full logits; images grouped by the grid's counts."""
    inputs = model_inputs(batch)
    student_logits = student(**inputs).logits
    with torch.no_grad():
        teacher_logits = teacher(**inputs).logits
    targets = batch["labels"][:, 1:] != IGNORE_INDEX
    images = batch["input_ids"] == student.config.image_token_id
    counts = batch["image_token_counts"].tolist()
    relation = [1 - torch.nn.functional.cosine_similarity((ours @ ours.T).flatten(), (theirs @ theirs.T).flatten(),
                                                          dim=0)
                for ours, theirs in zip(student_logits[images].split(counts), teacher_logits[images].split(counts),
                                        strict=True)]
    return {
        "response_kd": spec(student_logits[:, :-1][targets], teacher_logits[:, :-1][targets]).mean(),
        "visual_kd": spec(student_logits[images], teacher_logits[images]).mean(),
        "relation_kd": torch.stack(relation).mean(),
    }


IMAGE_TOKENS = {
    "qwen2.5-vl": [4, 6, 6],  # 56x56, 56x84 and 84x56 px after resizing, / 14² per patch / 2x2 merged
    "qwen3-vl": [4, 6, 6],
    "internvl": [4, 12, 12],  # 4 per 32 px tile: one tile for the square image, 2 and a thumbnail for the others
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_images_of_different_sizes_are_grouped_by_the_familys_counts(name, tokenizer_dir):
    build, family = FAMILIES[name]
    tokenizer = extended(tokenizer_dir, family.tokens)
    student, teacher = build(tokenizer, 32, 0), build(tokenizer, 64, 1)
    batch = written_inputs(tokenizer, family, [(images_of(SIZES[:2]), "How many objects are there?", "2"),
                                               (images_of(SIZES[2:]), "What colour is the image?", "red"),
                                               ([], "Describe the image briefly.", "A red circle.")])
    assert batch["image_token_counts"].tolist() == IMAGE_TOKENS[name]
    assert (batch["input_ids"] == student.config.image_token_id).sum() == sum(IMAGE_TOKENS[name])

    weights = LossWeights(ce=0.0, response_kd=1.0, visual_kd=0.5, relation_kd=2.0)
    _, terms = Distiller(OnlineTeacher(teacher), weights, SPEC, len(tokenizer))(student, batch)
    naive = naive_visual_terms(student, teacher, batch, SPEC)

    for name, value in naive.items():
        torch.testing.assert_close(terms[name], value.detach(), rtol=1e-4, atol=1e-6, msg=name)
        assert value > 0, name


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
    return student, qwen25_vl(qwen_tokenizer, 64, 1), batch, teacher_batch


def test_qwen25_vl_teacher_distils_a_siglip_qwen2_student_token_for_token(cross_family, tokenizer, qwen_tokenizer):
    student, teacher, student_batch, teacher_batch = cross_family
    shared = shared_vocabulary(tokenizer, qwen_tokenizer)
    assert shared == len(tokenizer) and len(qwen_tokenizer) == shared + len(QWEN_TOKENS)
    batch = student_batch | {TEACHER_PREFIX + name: value for name, value in teacher_batch.items()}
    assert (student_batch["input_ids"] == student.config.image_token_id).sum(1).tolist() == [16] * 4
    assert teacher_batch["image_token_counts"].tolist() == [4] * 4

    weights = LossWeights(ce=0.0, response_kd=1.0)
    loss, terms = Distiller(OnlineTeacher(teacher), weights, SPEC, shared)(student, batch)

    student_logits = student(**model_inputs(student_batch)).logits[..., :shared]
    with torch.no_grad():
        teacher_logits = teacher(**model_inputs(teacher_batch)).logits[..., :shared]
    student_targets = student_batch["labels"][:, 1:] != IGNORE_INDEX
    teacher_targets = teacher_batch["labels"][:, 1:] != IGNORE_INDEX
    assert torch.equal(student_batch["labels"][:, 1:][student_targets], teacher_batch["labels"][:, 1:][teacher_targets])
    naive = SPEC(student_logits[:, :-1][student_targets], teacher_logits[:, :-1][teacher_targets]).mean()
    torch.testing.assert_close(terms["response_kd"], naive.detach(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(loss, naive, rtol=1e-4, atol=1e-7)


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
    weights = LossWeights(ce=1.0, response_kd=1.0, visual_kd=1.0, relation_kd=1.0)
    with pytest.raises(ValueError, match=r"image tokens per image: Student \[16, 16, 16, 16\], Teacher \[4, 4, 4, 4\]"):
        Distiller(OnlineTeacher(teacher), weights, SPEC, len(tokenizer))(student, batch)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_saved_model_reloads_in_plain_transformers_with_identical_logits(name, tokenizer_dir, tmp_path):
    build, family = FAMILIES[name]
    tokenizer = extended(tokenizer_dir, family.tokens)
    model = build(tokenizer, 32, 0)
    batch = written_inputs(tokenizer, family, [(images_of(SIZES), "How many objects are there?", "3")])
    model.save_pretrained(tmp_path)

    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**model_inputs(batch)).logits, model(**model_inputs(batch)).logits,
                                   rtol=0, atol=0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_labels_under_the_familys_template_are_the_assistant_turns(name, tokenizer_dir):
    _, family = FAMILIES[name]
    tokenizer = extended(tokenizer_dir, family.tokens)
    answers = ["2", "red", "A red circle."]
    batch = written_inputs(tokenizer, family, [(images_of(SIZES[:2]), "How many objects are there?", answers[0]),
                                               (images_of(SIZES[2:]), "What colour is the image?", answers[1]),
                                               ([], "Describe the image briefly.", answers[2])])
    decoded = [tokenizer.decode(row[row != IGNORE_INDEX]) for row in batch["labels"]]
    assert decoded == [answer + "<|im_end|>" for answer in answers]
