
import pytest
import torch
import torch.nn.functional as F

from llava_ckd.data.collator import TEACHER_PREFIX
from llava_ckd.data.conversations import IGNORE_INDEX
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller
from llava_ckd.distill.teachers import OnlineTeacher, teacher_inputs
from llava_ckd.distill.terms import loss_terms
from tests.distill.conftest import coarse_teacher, collate, load_dataset
from tests.tolerance import (
    assert_float32_close,
    assert_gradients_close,
    gradient_reductions,
    loss_reductions,
    term_tolerance,
)

WEIGHT_OF = dict(ce=0.7, response_kd=1.3, visual_kd=0.4, relation_kd=2.0)
WEIGHTS = loss_terms(WEIGHT_OF)
SPEC = DivergenceSpec(name="jsd", temperature=2.0, beta=0.3)


def model_inputs(batch):
    return {name: batch[name] for name in ("input_ids", "attention_mask", "pixel_values")}


WEIGHTS_WITHOUT_VISUAL = loss_terms(WEIGHT_OF | {"visual_kd": 0.0, "relation_kd": 0.0})


def naive_terms(student, teacher, batch, spec):
    """The loss terms the plain way: full logits of both models, masks written out here."""
    inputs, labels = model_inputs(batch), batch["labels"]
    teacher_side = teacher_inputs(batch)
    student_logits = student(**inputs).logits
    with torch.no_grad():
        teacher_logits = teacher(**{k: v for k, v in teacher_side.items() if k != "labels"}).logits
    student_targets = labels[:, 1:] != IGNORE_INDEX
    teacher_targets = teacher_side["labels"][:, 1:] != IGNORE_INDEX
    terms = {
        "ce": student(**inputs, labels=labels).loss,
        "response_kd": spec(student_logits[:, :-1][student_targets], teacher_logits[:, :-1][teacher_targets]).mean(),
    }
    student_images = batch["input_ids"] == student.config.image_token_id
    teacher_images = teacher_side["input_ids"] == teacher.config.image_token_id
    if student_images.sum() == teacher_images.sum():
        terms["visual_kd"] = spec(student_logits[student_images], teacher_logits[teacher_images]).mean()
        images = len(batch["pixel_values"])
        student_z = student_logits[student_images].view(images, -1, student_logits.shape[-1])
        teacher_z = teacher_logits[teacher_images].view(images, -1, teacher_logits.shape[-1])
        student_r, teacher_r = student_z @ student_z.mT, teacher_z @ teacher_z.mT
        terms["relation_kd"] = (1 - F.cosine_similarity(student_r.flatten(1), teacher_r.flatten(1), dim=1)).mean()
    return terms


def gradients(loss, model):
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, parameters, allow_unused=True)


def assert_same_gradients(first, second, reductions):
    for a, b in zip(first, second, strict=True):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
    assert_gradients_close(first, second, *reductions)


def test_terms_and_gradients_equal_the_naive_full_logits_computation(pair, colour_data, tokenizer):
    student, processor, teacher = pair
    batch = collate(load_dataset(colour_data, processor), processor, [0, 3, 5])
    distiller = Distiller(OnlineTeacher(teacher), WEIGHTS, SPEC, len(tokenizer), chunk_size=7)

    loss, terms = distiller(student, batch)
    naive = naive_terms(student, teacher, batch, SPEC)

    assert terms.keys() == naive.keys() == {"ce", "response_kd", "visual_kd", "relation_kd"}
    for name, value in naive.items():
        tolerance = term_tolerance(name, batch, len(tokenizer), student, teacher)
        assert_float32_close(terms[name], value, *tolerance["reductions"], scale=tolerance["scale"], msg=name)
        assert value > 0
    naive_loss = sum(WEIGHT_OF[name] * value for name, value in naive.items())
    # the total rounds as its terms do: RDist's at the scale of its cosine (1, weighted), the others' at their own
    relation = term_tolerance("relation_kd", batch, len(tokenizer), student, teacher)["reductions"]
    assert_float32_close(loss, naive_loss, *relation, *loss_reductions(batch, len(tokenizer), student, teacher),
                         scale=float(naive_loss.detach()) + WEIGHT_OF["relation_kd"])
    assert_same_gradients(gradients(loss, student), gradients(naive_loss, student),
                          gradient_reductions(batch, len(tokenizer), student, teacher))


def test_a_kd_term_takes_its_own_divergence_and_the_others_the_stages(pair, colour_data, tokenizer):
    student, processor, teacher = pair
    batch = collate(load_dataset(colour_data, processor), processor, [0, 3, 5])
    visual_spec = DivergenceSpec(name="reverse_kl")
    losses = loss_terms([{"term": "response_kd", "weight": 1.0},
                         {"term": "visual_kd", "weight": 0.5, "divergence": visual_spec.model_dump()}])

    loss, terms = Distiller(OnlineTeacher(teacher), losses, SPEC, len(tokenizer))(student, batch)
    under_stage_spec, under_visual_spec = (naive_terms(student, teacher, batch, spec) for spec in (SPEC, visual_spec))

    assert not torch.isclose(under_stage_spec["visual_kd"], under_visual_spec["visual_kd"], rtol=1e-2)
    reductions = loss_reductions(batch, len(tokenizer), student, teacher)
    assert_float32_close(terms["response_kd"], under_stage_spec["response_kd"], *reductions)
    assert_float32_close(terms["visual_kd"], under_visual_spec["visual_kd"], *reductions)
    assert terms.keys() == {"ce", "response_kd", "visual_kd"}
    assert_float32_close(loss, terms["response_kd"] + 0.5 * terms["visual_kd"])  # one addition


def test_without_a_teacher_the_loss_is_the_models_own_cross_entropy_over_its_whole_head(pair, colour_data):
    student, processor, _ = pair
    batch = collate(load_dataset(colour_data, processor), processor, [0, 3, 5])
    head_rows = len(student.get_output_embeddings().weight)

    loss, terms = Distiller.cross_entropy(head_rows, chunk_size=7)(student, batch)
    reference = student(**model_inputs(batch), labels=batch["labels"]).loss

    assert terms.keys() == {"ce"}
    reductions = loss_reductions(batch, head_rows, student)
    assert_float32_close(loss, reference, *reductions)
    assert_float32_close(terms["ce"], reference, *reductions)
    assert_same_gradients(gradients(loss, student), gradients(reference, student),
                          gradient_reductions(batch, head_rows, student))


def test_zero_weights_leave_their_terms_out_of_the_loss(pair, colour_data, tokenizer):
    student, processor, teacher = pair
    batch = collate(load_dataset(colour_data, processor), processor, [1, 2])
    kd_only = Distiller(OnlineTeacher(teacher), loss_terms(dict(ce=0, response_kd=1)), SPEC, len(tokenizer))

    loss, terms = kd_only(student, batch)

    assert terms.keys() == {"ce", "response_kd"} and terms["ce"] > 0
    torch.testing.assert_close(loss.detach(), terms["response_kd"])


def test_teacher_with_other_image_token_count_is_aligned_by_response_positions(pair, colour_data, tokenizer):
    student, processor, _ = pair
    teacher, teacher_processor = coarse_teacher(tokenizer)
    dataset = load_dataset(colour_data, processor)
    teacher_dataset = load_dataset(colour_data, teacher_processor)
    batch = collate(dataset, processor, [0, 1, 6], teacher=(teacher_dataset, teacher_processor))

    image_id = student.config.image_token_id
    assert ((batch["input_ids"] == image_id).sum(1) == 16).all()
    assert ((batch[TEACHER_PREFIX + "input_ids"] == image_id).sum(1) == 4).all()
    student_answers = batch["labels"][batch["labels"] != IGNORE_INDEX]
    teacher_labels = batch[TEACHER_PREFIX + "labels"]
    assert torch.equal(teacher_labels[teacher_labels != IGNORE_INDEX], student_answers)

    loss, terms = Distiller(OnlineTeacher(teacher), WEIGHTS_WITHOUT_VISUAL, SPEC, len(tokenizer))(student, batch)
    naive = naive_terms(student, teacher, batch, SPEC)

    assert terms.keys() == {"ce", "response_kd"}
    reductions = loss_reductions(batch, len(tokenizer), student, teacher)
    assert_float32_close(terms["response_kd"], naive["response_kd"], *reductions)
    assert_float32_close(terms["ce"], naive["ce"], *reductions)


def test_visual_and_relation_kd_are_refused_when_the_teacher_has_other_image_tokens(pair, colour_data, tokenizer):
    student, processor, _ = pair
    teacher, teacher_processor = coarse_teacher(tokenizer)
    batch = collate(load_dataset(colour_data, processor), processor, [0, 1],
                    teacher=(load_dataset(colour_data, teacher_processor), teacher_processor))

    with pytest.raises(ValueError, match=r"image tokens per image: Student \[16, 16\], Teacher \[4, 4\]\. "
                                         "Set visual_kd and relation_kd to 0"):
        Distiller(OnlineTeacher(teacher), WEIGHTS, SPEC, len(tokenizer))(student, batch)


def test_teacher_inputs_from_other_conversations_are_refused(pair, colour_data, tokenizer):
    student, processor, _ = pair
    teacher, teacher_processor = coarse_teacher(tokenizer)
    batch = collate(load_dataset(colour_data, processor), processor, [0, 1],
                    teacher=(load_dataset(colour_data, teacher_processor), teacher_processor))
    labels = batch[TEACHER_PREFIX + "labels"]
    labels[0, (labels[0] != IGNORE_INDEX).nonzero()[0]] = IGNORE_INDEX

    with pytest.raises(ValueError, match="different numbers of response tokens per sample"):
        Distiller(OnlineTeacher(teacher), WEIGHTS, SPEC, len(tokenizer))(student, batch)


def test_a_student_sample_cut_by_max_length_keeps_as_many_teacher_answer_tokens(pair, colour_data, tokenizer):
    student, processor, _ = pair
    teacher, teacher_processor = coarse_teacher(tokenizer)
    full = load_dataset(colour_data, processor, max_length=512).samples[0]
    cut_at = len(full.input_ids) - 2  # the Student loses its last answer's end; the Teacher (12 fewer image tokens) not
    dataset = load_dataset(colour_data, processor, max_length=cut_at)
    teacher_dataset = load_dataset(colour_data, teacher_processor, max_length=cut_at)
    assert dataset.samples[0].truncated and not teacher_dataset.samples[0].truncated

    batch = collate(dataset, processor, [0, 1], teacher=(teacher_dataset, teacher_processor))

    teacher_labels = batch[TEACHER_PREFIX + "labels"]
    assert torch.equal(teacher_labels[teacher_labels != IGNORE_INDEX], batch["labels"][batch["labels"] != IGNORE_INDEX])
    Distiller(OnlineTeacher(teacher), WEIGHTS_WITHOUT_VISUAL, SPEC, len(tokenizer))(student, batch)
