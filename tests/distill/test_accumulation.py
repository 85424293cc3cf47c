import torch
from transformers import TrainerCallback, TrainingArguments

from llava_ckd.data.collator import Collator
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller
from llava_ckd.distill.positions import response_mask
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.terms import loss_terms
from llava_ckd.models import build_preset
from llava_ckd.train.trainer import StageTrainer
from tests.conftest import colour_records, write_dataset
from tests.distill.conftest import load_dataset
from tests.tolerance import assert_gradients_close, float32_bound, gradient_reductions, loss_reductions


class GradientCapture(TrainerCallback):
    def __init__(self):
        self.gradients = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def uneven_records():
    """Answers from 1 to ~20 tokens, so micro-batches hold very different numbers of target tokens."""
    records = colour_records(8)
    for index, record in enumerate(records):
        record["conversations"][3]["value"] = " ".join(["no"] * (1 + 3 * index))
    return records


def one_step(dataset, processor, tokenizer, teacher, batch_size, accumulation, output_dir):
    """Gradient of the first optimizer step (learning rate 0, no clipping) and the step's log."""
    student, _ = build_preset("tiny-student", tokenizer, seed=0)
    capture = GradientCapture()
    distiller = Distiller(
        OnlineTeacher(teacher),
        loss_terms(dict(ce=1, response_kd=1, visual_kd=0.5, relation_kd=3)),
        DivergenceSpec(name="reverse_kl"),
        len(tokenizer),
    )
    trainer = StageTrainer(
        model=student.train(),
        args=TrainingArguments(
            output_dir=str(output_dir),
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            learning_rate=0.0,
            max_grad_norm=0.0,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            remove_unused_columns=False,
            dataloader_pin_memory=False,
        ),
        train_dataset=dataset,
        data_collator=Collator(processor, tokenizer.pad_token_id),
        callbacks=[capture],
        distiller=distiller,
    )
    trainer.train()
    return capture.gradients, trainer.state.log_history[0]


def test_accumulating_four_batches_of_two_gives_the_gradient_of_one_batch_of_eight(pair, tokenizer, tmp_path):
    student, processor, teacher = pair
    dataset = load_dataset(write_dataset(tmp_path / "data", uneven_records()), processor, max_length=128)
    targets_per_sample = [int(response_mask(torch.tensor([s.labels])).sum()) for s in dataset.samples]
    assert max(targets_per_sample) > 5 * min(targets_per_sample)

    big, big_log = one_step(dataset, processor, tokenizer, teacher, 8, 1, tmp_path / "big")
    accumulated, accumulated_log = one_step(dataset, processor, tokenizer, teacher, 2, 4, tmp_path / "small")

    assert big.keys() == accumulated.keys() and len(big) > 10
    batch_of_eight = {"input_ids": torch.zeros(8, max(len(sample.input_ids) for sample in dataset.samples))}
    accumulation = 4  # the four micro-batches' gradients are summed too
    assert_gradients_close([accumulated[name] for name in big], list(big.values()),
                           *gradient_reductions(batch_of_eight, len(tokenizer), student, teacher), accumulation)
    bound = 2 * float32_bound(*loss_reductions(batch_of_eight, len(tokenizer), student, teacher), accumulation)
    for name in ("loss", "ce", "response_kd", "visual_kd", "relation_kd"):
        assert abs(accumulated_log[name] - big_log[name]) <= bound * abs(big_log[name]), name
    total = big_log["ce"] + big_log["response_kd"] + 0.5 * big_log["visual_kd"] + 3 * big_log["relation_kd"]
    assert abs(big_log["loss"] - total) <= 1e-4 * total
