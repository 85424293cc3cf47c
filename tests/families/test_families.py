"""Each family as Student, as Teacher (online and cached) and in evaluation, at tiny width, from local files."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModelForImageTextToText

from llava_ckd.config import StageConfig
from llava_ckd.data.collator import Collator, ConversationDataset, TeacherView
from llava_ckd.data.conversations import (
    IGNORE_INDEX,
    ConversationEncoder,
    image_expansion,
    load_conversations,
    load_rgb,
)
from llava_ckd.distill.cache import write_teacher_cache
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller
from llava_ckd.distill.positions import model_inputs
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.terms import loss_terms
from llava_ckd.eval.generate import AnswerGenerator, GenerationRequest
from llava_ckd.eval.run import evaluate
from llava_ckd.files import DataError
from llava_ckd.models.build import ModelError, load_vlm
from llava_ckd.models.load import model_from_source
from llava_ckd.models.parts import PARTS, set_trainable
from llava_ckd.models.source import ModelSource
from llava_ckd.train.stage import run_stage
from tests.families.conftest import FAMILIES, IMAGES, RECORDS, save
from tests.tolerance import assert_float32_close, term_tolerance

WEIGHTS = loss_terms(dict(ce=0.7, response_kd=1.3, visual_kd=0.4, relation_kd=2.0))
SPEC = DivergenceSpec(name="jsd", temperature=2.0, beta=0.3)


def samples_of(processor, data, max_length=512):
    samples, _ = load_conversations(data, data.parent / "images", processor, max_length)
    return samples


def label_runs(sample) -> list[list[int]]:
    runs, current = [], []
    for label in sample.labels:
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    return runs + ([current] if current else [])


def test_every_parameter_belongs_to_the_vision_tower_the_projector_or_the_llm(family, checkpoints):
    """What `train: [...]` picks: each family's parameters split into the three parts, none of them empty."""
    model, _ = load_vlm(checkpoints["student"])
    counts = set_trainable(model, PARTS)
    assert all(counts[part] > 0 for part in PARTS), counts
    assert sum(counts.values()) == sum(parameter.numel() for parameter in model.parameters())


def test_labels_cover_exactly_the_assistant_turns_under_the_familys_template(family, checkpoints, family_data):
    model, processor = load_vlm(checkpoints["student"])
    samples = samples_of(processor, family_data)

    assert [sample.sample_id for sample in samples] == [record["id"] for record in RECORDS]
    for sample, record in zip(samples, RECORDS, strict=True):
        answers = [turn["value"] + family.end_of_turn for turn in record["conversations"] if turn["from"] == "gpt"]
        decoded = [processor.tokenizer.decode(run).strip() for run in label_runs(sample)]
        assert decoded == answers, sample.sample_id
        assert len(sample.image_tokens) == len(sample.images)
        assert sum(sample.image_tokens) == sample.input_ids.count(model.config.image_token_id)


def test_an_images_expansion_depends_on_its_size_alone(family, checkpoints, family_data):
    """What lets the data check expand each image size once: a blank image of the same size expands the same."""
    _, processor = load_vlm(checkpoints["student"])
    for name in IMAGES:
        image = load_rgb(family_data.parent / "images" / name)
        assert image_expansion(processor, image) == image_expansion(processor, Image.new("RGB", image.size)), name


def test_spliced_image_ids_equal_the_tokenization_of_the_whole_text(family, checkpoints, family_data):
    _, processor = load_vlm(checkpoints["student"])
    spliced, whole = (ConversationEncoder(processor, family_data.parent / "images", 512) for _ in range(2))
    whole._splices = False
    for position, record in enumerate(json.loads(family_data.read_text())):
        assert spliced.encode(record, position) == whole.encode(record, position), record["id"]
    # Gemma 3's expansion opens with newlines, which the text before it can merge with: it is tokenized whole
    assert (spliced._splices is True) == (family.name != "gemma3")


def test_image_token_counts_are_the_models_own(family, checkpoints, family_data):
    """Per image, the count the processor expands into is what the model's vision side produces."""
    model, processor = load_vlm(checkpoints["student"])
    samples = samples_of(processor, family_data)
    two = next(sample for sample in samples if sample.sample_id == "two")
    batch = Collator(processor, processor.tokenizer.pad_token_id)([two])
    features = model.get_image_features(**{name: value for name, value in model_inputs(batch).items()
                                           if name not in ("input_ids", "attention_mask", "mm_token_type_ids")})
    produced = sum(int(torch.as_tensor(part.shape[:-1]).prod()) for part in features.pooler_output)
    assert produced == sum(two.image_tokens)
    square, wide = two.image_tokens
    assert (square != wide) == family.variable_image_tokens, (square, wide)


def naive_terms(student, teacher, batch, spec):
    """The loss terms from both models' full logits, images grouped by the batch's per-image token counts."""
    inputs, labels = model_inputs(batch), batch["labels"]
    student_logits = student(**inputs).logits
    with torch.no_grad():
        teacher_logits = teacher(**inputs).logits
    targets = labels[:, 1:] != IGNORE_INDEX
    images = batch["input_ids"] == student.config.image_token_id
    counts = batch["image_token_counts"].tolist()
    relation = []
    for ours, theirs in zip(student_logits[images].split(counts), teacher_logits[images].split(counts), strict=True):
        relation.append(1 - F.cosine_similarity((ours @ ours.T).flatten(), (theirs @ theirs.T).flatten(), dim=0))
    return {
        "ce": student(**inputs, labels=labels).loss,
        "response_kd": spec(student_logits[:, :-1][targets], teacher_logits[:, :-1][targets]).mean(),
        "visual_kd": spec(student_logits[images], teacher_logits[images]).mean(),
        "relation_kd": torch.stack(relation).mean(),
    }


def test_visual_and_relation_kd_group_images_of_different_sizes_per_image(family, checkpoints, family_data):
    student, processor = load_vlm(checkpoints["student"])
    teacher, _ = load_vlm(checkpoints["teacher"])
    dataset = ConversationDataset(samples_of(processor, family_data))
    batch = Collator(processor, processor.tokenizer.pad_token_id)([dataset[i] for i in (0, 1, 2, 3)])
    if family.variable_image_tokens:
        assert len(set(batch["image_token_counts"].tolist())) > 1

    loss, terms = Distiller(OnlineTeacher(teacher), WEIGHTS, SPEC, len(processor.tokenizer))(student, batch)
    naive = naive_terms(student, teacher, batch, SPEC)

    assert terms.keys() == naive.keys()
    for name, value in naive.items():
        tolerance = term_tolerance(name, batch, len(processor.tokenizer), student, teacher)
        assert_float32_close(terms[name], value, *tolerance["reductions"], scale=tolerance["scale"], msg=name)
        assert value > 0


def stage_config(kind, model, data, out, **extra) -> StageConfig:
    return StageConfig.model_validate({
        "kind": kind, "model": {"path": str(model)}, "output_dir": str(out),
        "data": {"conversations": str(data), "images": str(data.parent / "images"), "max_length": 512},
        "train": ["projector", "llm"], "learning_rate": 1e-3, "batch_size": 2, "max_steps": 2, "save_steps": 2,
        "logging_steps": 1, **extra,
    })


def logged(final) -> dict:
    return json.loads((final / "metrics.json").read_text())


def assert_same_logits(first, second, processor, data):
    batch = Collator(processor, processor.tokenizer.pad_token_id)(samples_of(processor, data)[:3])
    with torch.no_grad():
        torch.testing.assert_close(first(**model_inputs(batch)).logits, second(**model_inputs(batch)).logits,
                                   rtol=0, atol=0)


def test_student_sft_then_plain_reload_gives_identical_logits(family, checkpoints, family_data, tmp_path):
    final = run_stage(stage_config("sft", checkpoints["student"], family_data, tmp_path / "sft"))

    ours, processor = load_vlm(final)
    plain = AutoModelForImageTextToText.from_pretrained(final).eval()
    untrained, _ = load_vlm(checkpoints["student"])
    assert type(plain) is type(untrained)
    assert_same_logits(ours, plain, processor, family_data)
    assert not torch.equal(plain.get_output_embeddings().weight, untrained.get_output_embeddings().weight)


def test_online_and_cached_teacher_distill_stages(family, checkpoints, family_data, tmp_path):
    online = run_stage(stage_config(
        "distill", checkpoints["student"], family_data, tmp_path / "online",
        teacher={"kind": "online", "model": {"path": str(checkpoints["teacher"])}},
        losses={"ce": 1.0, "response_kd": 1.0, "visual_kd": 0.5, "relation_kd": 1.0}))
    assert logged(online)["global_step"] == 2

    teacher, processor = load_vlm(checkpoints["teacher"])
    cache = write_teacher_cache(teacher, processor, family_data, family_data.parent / "images", tmp_path / "cache",
                                top_k=8, max_length=512, batch_size=2)
    cached = run_stage(stage_config("distill", checkpoints["student"], family_data, tmp_path / "cached",
                                    teacher={"kind": "cached", "path": str(cache)},
                                    losses={"ce": 1.0, "response_kd": 1.0}))
    assert logged(cached)["global_step"] == 2


def benchmark_folder(folder, family_data):
    """A synthetic-benchmark folder (questions, answer key, images) on the family data's images of three sizes."""
    names = [name for name in IMAGES for _ in range(3)]
    questions = [{"question_id": i, "image": name, "category": "colour",
                  "text": "What colour is the image?" + " Really?" * (i % 3)} for i, name in enumerate(names)]
    (folder / "images").mkdir(parents=True)
    for name in IMAGES:
        (folder / "images" / name).write_bytes((family_data.parent / "images" / name).read_bytes())
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    key = [{"question_id": q["question_id"], "answer": "red", "category": "colour"} for q in questions]
    (folder / "answer_key.jsonl").write_text("".join(json.dumps(k) + "\n" for k in key))
    return folder


def sharpened(folder, out):
    """The checkpoint in fp64 with large LLM weights (the LM head too, where it is not tied to the embeddings), so
    greedy answers depend on the input and never tie."""
    model, processor = load_vlm(folder)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in dict.fromkeys([*model.get_decoder().parameters(), model.get_output_embeddings().weight]):
            parameter.normal_(0, 0.3)
    model.to(torch.float64).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def test_batched_generation_gives_the_answers_of_one_at_a_time(family, checkpoints, family_data, tmp_path):
    model, processor = load_vlm(sharpened(checkpoints["student"], tmp_path / "model"))
    generator = AnswerGenerator(model, processor, max_new_tokens=4)
    images = family_data.parent / "images"
    requests = [GenerationRequest("What colour is the image?" + " Really?" * (i % 3), images / name)
                for i, name in enumerate(name for name in IMAGES for _ in range(2))]
    requests.append(GenerationRequest("How many objects are there?"))

    one_by_one = [generator.answer_ids([request])[0] for request in requests]
    assert generator.answer_ids(requests) == one_by_one
    assert len({tuple(ids) for ids in one_by_one}) > 1, "answers should depend on the input"


def test_llava_ckd_eval_batched_equals_batch_one(family, checkpoints, family_data, tmp_path):
    model = sharpened(checkpoints["student"], tmp_path / "model")
    benchmark = benchmark_folder(tmp_path / "bench", family_data)
    evaluate(model, "synthetic", benchmark, tmp_path / "batched", batch_size=4)
    evaluate(model, "synthetic", benchmark, tmp_path / "single", batch_size=1)

    def answers(folder):
        return [json.loads(line)["text"] for line in (folder / "answers.jsonl").read_text().splitlines()]

    assert answers(tmp_path / "batched") == answers(tmp_path / "single")
    assert len(answers(tmp_path / "single")) == 9


def test_a_teacher_whose_template_gives_other_assistant_tokens_is_refused(family_data):
    """Response KD pairs assistant tokens one for one: Gemma 3's `red<end_of_turn>` is not ChatML's `red<|im_end|>`."""
    _, student_processor = FAMILIES["llava"].build(32, 0)
    _, teacher_processor = FAMILIES["gemma3"].build(64, 1)

    with pytest.raises(DataError, match="sample square: the Teacher's chat template and tokenizer give other "
                                        "assistant tokens"):
        TeacherView.between(samples_of(student_processor, family_data), student_processor,
                            samples_of(teacher_processor, family_data), teacher_processor)


def test_a_checkpoint_whose_processor_writes_another_image_token_is_refused(tmp_path):
    model, processor = FAMILIES["smolvlm"].build(32, 0)
    model.config.image_token_id = processor.tokenizer.convert_tokens_to_ids("<global-img>")
    save(model, processor, tmp_path / "model")

    with pytest.raises(ModelError, match="the model reads image features at token id .*, its processor writes image "
                                         "tokens as id 3 \\('<image>'\\)"):
        model_from_source(ModelSource(path=str(tmp_path / "model")))
