"""The experiment trackers a stage reports to (`report_to`: TensorBoard by default, W&B and MLflow when installed),
each given the stage's input fingerprints as run config, so that a run names the data and models it came from."""

from __future__ import annotations

import json

from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

INPUTS_KEY = "llava_ckd_inputs"


class InputsToTrackers(TrainerCallback):
    """At the start of training, on the main process, the stage's inputs go to every tracker it reports to: a
    TensorBoard text entry, W&B's run config, an MLflow artifact."""

    def __init__(self, inputs: dict, callbacks: list):
        self.inputs = inputs
        self.callbacks = callbacks
        """The trainer's callbacks, the trackers' among them (this one runs after theirs set up their runs)."""

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        text = json.dumps(self.inputs, indent=2, sort_keys=True)
        for callback in self.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                callback.tb_writer.add_text(INPUTS_KEY, f"```json\n{text}\n```")
                callback.tb_writer.flush()
        if "wandb" in args.report_to:
            import wandb

            if wandb.run is not None:
                wandb.config.update({INPUTS_KEY: self.inputs}, allow_val_change=True)
        if "mlflow" in args.report_to:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.log_dict(self.inputs, f"{INPUTS_KEY}.json")
