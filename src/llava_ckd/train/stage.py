"""One training stage = one Hugging Face `Trainer` run, resumable, ending in a `save_pretrained` folder.

Layout of a stage's output directory:
    checkpoint-N/     Trainer checkpoints (model, optimizer, scheduler, RNG, data position)
    checkpoint.partial/  the checkpoint being written (renamed to checkpoint-N once whole)
    runs/             TensorBoard logs
    data_report.json  samples kept, truncated and skipped (with reasons)
    inputs.json       what the stage is made from (see `inputs.py`)
    final/            the trained model + processor + stage.yaml (the resolved config) + inputs.json + metrics.json
A stage whose `final/` was made from the same inputs is not run again; one with checkpoints resumes from the
last complete one; a folder holding work made from other inputs is refused, or cleared with `restart`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import torch
import yaml
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from llava_ckd.config import StageConfig
from llava_ckd.data.collator import Collator, ConversationDataset, cacheable_images
from llava_ckd.data.conversations import load_conversations
from llava_ckd.distill.heads import check_plain_head
from llava_ckd.distill.loss import Distiller
from llava_ckd.engines import DISTRIBUTED_TIMEOUT
from llava_ckd.models.load import model_from_source
from llava_ckd.models.parts import set_trainable
from llava_ckd.train.inputs import FINAL, claim_output_dir, finished, stage_inputs, write_inputs
from llava_ckd.train.teacher_side import build_distiller
from llava_ckd.train.trackers import InputsToTrackers
from llava_ckd.train.trainer import StageTrainer

log = logging.getLogger(__name__)

CONFIG_FILE = "stage.yaml"


DEEPSPEED_TAG = "latest"
"""DeepSpeed's pointer to its sharded states; under ZeRO-3 without 16-bit weights a checkpoint has no safetensors."""


def checkpoint_complete(folder: Path) -> bool:
    """Trainer writes `trainer_state.json` after the weights, optimizer, scheduler and RNG states: a checkpoint
    whose state file is whole and whose weights (or DeepSpeed's sharded states) are there was saved to the end."""
    try:
        json.loads((folder / TRAINER_STATE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return any((folder / name).is_file() for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, DEEPSPEED_TAG))


def numbered_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """A stage's `checkpoint-N` folders with their step N, oldest first."""
    return sorted((int(match.group(1)), path) for path in Path(output_dir).glob("checkpoint-*")
                  if (match := re.fullmatch(r"checkpoint-(\d+)", path.name)) and path.is_dir())


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint saved to the end; newer ones cut short by a kill are deleted, and named in the log."""
    for _, path in reversed(numbered_checkpoints(output_dir)):
        if checkpoint_complete(path):
            return path
        log.warning("skipping %s: its save was cut short (no complete trainer_state.json or weights); deleting it",
                    path)
        shutil.rmtree(path)
    return None


def training_arguments(config: StageConfig) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(config.output_dir),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        lr_scheduler_type=config.schedule,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        activation_checkpointing=config.activation_checkpointing,
        ddp_timeout=int(DISTRIBUTED_TIMEOUT.total_seconds()),
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to=list(config.report_to) or "none",
        remove_unused_columns=False,
        dataloader_num_workers=config.dataloader_workers,
        dataloader_pin_memory=False,
        use_cpu=not torch.cuda.is_available(),  # so that several CPU processes (torchrun) form a gloo group
    )


def save_final(trainer: Trainer, processor, config: StageConfig, inputs: dict, metrics: dict) -> Path:
    """Write `final/` through a temporary folder, so a kill during the save never leaves half a model.

    Every process takes part in `save_model` (sharded engines gather the weights); the main process writes.
    """
    final = config.output_dir / FINAL
    staging = config.output_dir / (FINAL + ".partial")
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        processor.save_pretrained(staging)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        (staging / CONFIG_FILE).write_text(yaml.safe_dump(config.resolved(), sort_keys=True))
        write_inputs(staging, inputs)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    trainer.accelerator.wait_for_everyone()
    return final


def run_stage(config: StageConfig, callbacks: list[TrainerCallback] = (), *, restart: bool = False) -> Path:
    """Train one stage (or find it finished) and return the folder of its final model.

    Work in the stage's folder made from other inputs raises `StageInputsChanged`, unless `restart`, which
    deletes it first.
    """
    final = config.output_dir / FINAL
    inputs = stage_inputs(config)
    if finished(config, inputs):
        log.info("stage %s already finished: %s", config.output_dir, final)
        return final
    arguments = training_arguments(config)
    with arguments.main_process_first(desc="checking the stage's folder"):  # the main one clears it on restart
        claim_output_dir(config, inputs, restart)
    set_seed(config.seed)
    model, processor = model_from_source(config.model, seed=config.seed)
    check_plain_head(model, "Student")
    trainable = set_trainable(model, config.trained_parts)
    log.info("training %s: %s", ", ".join(config.trained_parts), trainable)

    with arguments.main_process_first(desc="checking the conversations"):  # the others read its sample cache
        samples, report = load_conversations(config.data.conversations, config.data.images, processor,
                                             config.data.max_length)
    if arguments.process_index == 0:
        (config.output_dir / "data_report.json").write_text(json.dumps(report.to_dict(), indent=2))

    if config.kind == "distill":
        distiller, teacher_view = build_distiller(config, model, processor, samples)
    else:
        distiller, teacher_view = Distiller.cross_entropy(len(model.get_output_embeddings().weight)), None
    collator = Collator(processor, processor.tokenizer.pad_token_id,
                        cache_images=min(len(samples), cacheable_images(processor)),
                        with_sample_index=distiller.needs_sample_index, teacher=teacher_view)
    trainer = StageTrainer(
        model=model.train(),
        args=arguments,
        train_dataset=ConversationDataset(samples),
        data_collator=collator,
        processing_class=processor,
        callbacks=list(callbacks),
        distiller=distiller,
        schedule_window=config.schedule_window,
    )
    trainer.add_callback(InputsToTrackers(inputs, trainer.callback_handler.callbacks))
    with arguments.main_process_first(desc="finding the last complete checkpoint"):  # the main one deletes cut ones
        last_checkpoint = last_complete_checkpoint(config.output_dir)
    if last_checkpoint:
        log.info("resuming from %s", last_checkpoint)
    result = trainer.train(resume_from_checkpoint=str(last_checkpoint) if last_checkpoint else None)
    metrics = dict(result.metrics, samples_kept=report.kept, samples_skipped=sum(report.skipped.values()),
                   global_step=trainer.state.global_step)
    return save_final(trainer, processor, config, inputs, metrics)
