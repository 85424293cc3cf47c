"""The `Trainer` every stage runs on; its loss comes from a `Distiller` (cross-entropy alone, or with a Teacher)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, get_scheduler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from llava_ckd.config import ScheduleWindow
from llava_ckd.distill.loss import Distiller, TargetCounts
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.errors import UserError

log = logging.getLogger(__name__)

LOSS_SUM_FILE = "loss_sum.json"
CHECKPOINT_STAGING = "checkpoint.partial"


class LossNotFinite(UserError, ValueError):
    """Training diverged: a loss term is NaN or infinite."""


def _shifted(factor: Callable[[int], float], start: int, step: int) -> float:
    return factor(start + step)


class StageTrainer(Trainer):
    def __init__(self, *args, distiller: Distiller, schedule_window: ScheduleWindow | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.distiller = distiller
        self.schedule_window = schedule_window
        if isinstance(distiller.teacher, OnlineTeacher):
            distiller.teacher.place(self.accelerator)  # replicated, or sharded like the Student
        self._window: TargetCounts | None = None
        self._term_sums: dict[str, torch.Tensor] = {}
        self._windows_since_log = 0
        self.loss_is_scaled_for_ga = True  # every term is divided by its count over the accumulation window
        self._loss_sum: torch.Tensor | None = None  # of every step of the stage so far, runs before a resume included
        self._saving_into: Path | None = None  # while a checkpoint is written: where (see `_save_checkpoint`)

    def train(self, resume_from_checkpoint: str | None = None, **kwargs):
        """`train_loss` in the metrics is the mean loss over all steps of the stage, also when it resumed.

        (Transformers' own averages over the steps of this run alone.) The loss of each step is added in float64 to a
        sum that checkpoints keep, so a resumed stage reports exactly the uninterrupted run's figure.
        """
        self._loss_sum = loss_sum_at(resume_from_checkpoint)
        if self._loss_sum is not None:
            self._loss_sum = self._loss_sum.to(self.args.device)
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        return output._replace(training_loss=output.metrics["train_loss"])  # as `log` set it

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._loss_sum is not None:
            self._loss_sum += loss
        return loss

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint into `checkpoint.partial/` and rename it to `checkpoint-N` once every process has
        written its part, then delete the oldest beyond `save_total_limit`: a kill at any instant leaves whole
        checkpoints only. (`Trainer` writes in place, and process 0 writes `trainer_state.json` without waiting for
        the others' RNG states.) The checkpoint also keeps the stage's loss sum (see `train`)."""
        run_dir = Path(self._get_output_dir(trial))
        staging, name = run_dir / CHECKPOINT_STAGING, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # a save cut short
        self.accelerator.wait_for_everyone()
        if self._loss_sum is not None:
            self._loss_sum = self._process_mean(self._loss_sum)  # every process goes on from the value kept
            if self.args.should_save:
                (staging / name).mkdir(parents=True)
                (staging / name / LOSS_SUM_FILE).write_text(json.dumps({"loss_sum": float(self._loss_sum)}))
        self._saving_into = staging
        try:
            super()._save_checkpoint(model, trial)  # into staging/checkpoint-N; its rotation sees that one alone
        finally:
            self._saving_into = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            shutil.rmtree(run_dir / name, ignore_errors=True)  # a same-named one from an earlier run
            (staging / name).rename(run_dir / name)
            staging.rmdir()
            rotate_checkpoints(str(run_dir), self.args.save_total_limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()

    def _get_output_dir(self, trial) -> str:
        return str(self._saving_into) if self._saving_into else super()._get_output_dir(trial)

    def _process_mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(value, reduction="mean") if self.args.world_size > 1 else value

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The stage's own schedule, or its window of one schedule over a chain of stages (`schedule_window`)."""
        window = self.schedule_window
        if window is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer or self.optimizer
        whole = get_scheduler(self.args.lr_scheduler_type, optimizer=optimizer,
                              num_warmup_steps=self.args.get_warmup_steps(window.total),
                              num_training_steps=window.total)
        self.lr_scheduler = LambdaLR(optimizer, partial(_shifted, whole.lr_lambdas[0], window.start))
        return self.lr_scheduler

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Also counts what the loss terms are averaged over in this gradient-accumulation window."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples:
            image_token_id = self.accelerator.unwrap_model(self.model).config.image_token_id
            counts = torch.stack(TargetCounts.of_batches(batch_samples, image_token_id)).to(device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                counts = self.accelerator.gather(counts).view(-1, len(TargetCounts._fields)).sum(0)
            self._window = TargetCounts(*counts)
            self._windows_since_log += 1
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        counts = self._window if model.training else None
        if counts is not None and num_items_in_batch is not None:
            counts = counts._replace(response_tokens=num_items_in_batch)
        loss, terms = self.distiller(model, inputs, counts)
        for name, value in terms.items():
            self._term_sums[name] = self._term_sums.get(name, 0) + value
        if counts is not None and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # the counts are global; data parallelism averages gradients
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs also get each loss term, averaged over the steps since the last log; a loss that is not
        finite stops the stage (no `final/` is written from a diverged run)."""
        if "loss" in logs and self._windows_since_log:
            names = sorted(self._term_sums)
            totals = torch.stack([self._term_sums[name] for name in names])
            if self.args.world_size > 1:  # each process holds its share of every term (divided by global counts)
                totals = self.accelerator.reduce(totals, reduction="sum")
            logs |= {name: float(total) / self._windows_since_log for name, total in zip(names, totals, strict=True)}
            self._term_sums, self._windows_since_log = {}, 0
            diverged = {name: value for name, value in logs.items() if name in names and not math.isfinite(value)}
            if diverged:  # the Trainer's own `loss` hides NaN and inf (logging_nan_inf_filter): the terms do not
                raise LossNotFinite(f"{self.args.output_dir}: loss terms {diverged} at step {self.state.global_step}; "
                                    "stopped without saving a final model (a learning rate too high, half precision "
                                    "overflowing, or damaged data or Teacher signals?)")
        if "train_loss" in logs and self._loss_sum is not None:  # the end of training: the stage's mean (`train`)
            logs["train_loss"] = float(self._process_mean(self._loss_sum)) / max(self.state.global_step, 1)
        super().log(logs, start_time)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Restore weights through `from_pretrained`, which maps checkpoint keys back to module names.

        `Trainer` writes checkpoints with `save_pretrained` in the original key layout (LLaVA's
        `language_model.model.*`), but its own resume path loads them with a plain non-strict
        `load_state_dict`, which for LLaVA models matches no key and silently keeps the current weights.
        """
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        model = self.accelerator.unwrap_model(model or self.model)
        restored = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype)
        model.load_state_dict(restored.state_dict())


def loss_sum_at(checkpoint: str | None) -> torch.Tensor | None:
    """The loss sum a checkpoint kept (zero for a fresh start; None for checkpoints written without one)."""
    if checkpoint is None:
        return torch.zeros((), dtype=torch.float64)
    path = Path(checkpoint) / LOSS_SUM_FILE
    if not path.is_file():
        log.warning("%s has no %s: train_loss will be the mean over the steps run from it on", checkpoint,
                    LOSS_SUM_FILE)
        return None
    return torch.tensor(json.loads(path.read_text())["loss_sum"], dtype=torch.float64)
