"""What a stage is made from, recorded in its output folder, so that it never resumes or reuses another's work.

`inputs.json` (in the stage's folder while it trains, copied into `final/`) holds the stage's fingerprint:
its resolved config, the conversation file's sha256, the images it names (name, size, mtime), and the
files of the Student's, the online Teacher's or the cached signals' folders. A rerun with the same
fingerprint resumes from the last checkpoint, or finds the stage finished; with another one it stops
with `StageInputsChanged`, naming each difference, unless asked to restart, which deletes the folder's
checkpoints, final model and logs first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llava_ckd.config import CachedTeacherConfig, StageConfig
from llava_ckd.data.conversations import images_of
from llava_ckd.errors import UserError
from llava_ckd.fingerprint import differences, file_sha256, location_fingerprint
from llava_ckd.models.source import ModelSource
from llava_ckd.storage import write_whole

INPUTS_FILE = "inputs.json"
FINAL = "final"
SHOWN_DIFFERENCES = 8
STAGE_OUTPUTS = ("checkpoint-*", "checkpoint.partial", FINAL, FINAL + ".partial", "runs", "data_report.json",
                 INPUTS_FILE)


class StageInputsChanged(UserError, ValueError):
    """The stage's folder holds work made from other inputs."""


def source_fingerprint(source: ModelSource) -> dict:
    return {field: location_fingerprint(getattr(source, field))
            for field in ("path", "vision", "llm", "tokenizer", "vision_init") if getattr(source, field) is not None}


def stage_inputs(config: StageConfig) -> dict:
    conversations = config.data.conversations
    inputs = {
        "config": config.identity(),
        "data": {"conversations": file_sha256(conversations) if conversations.is_file() else None,
                 "images": images_of(conversations, config.data.images) if conversations.is_file() else None},
        "model": source_fingerprint(config.model),
    }
    if isinstance(config.teacher, CachedTeacherConfig):
        inputs["teacher"] = location_fingerprint(config.teacher.path)
    elif config.teacher is not None:
        inputs["teacher"] = source_fingerprint(config.teacher.model)
    return inputs


def read_inputs(folder: Path) -> dict | None:
    path = folder / INPUTS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_inputs(folder: Path, inputs: dict) -> None:
    write_whole(folder / INPUTS_FILE, json.dumps(inputs, indent=1, sort_keys=True) + "\n")


def finished(config: StageConfig, inputs: dict | None = None) -> bool:
    """The stage's final model exists and was made from the stage's inputs (`inputs`, else computed now)."""
    recorded = read_inputs(config.output_dir / FINAL)
    return recorded is not None and recorded == (inputs or stage_inputs(config))


def has_work(folder: Path) -> bool:
    return (folder / FINAL).is_dir() or any(path.is_dir() for path in folder.glob("checkpoint-*"))


def stale_differences(config: StageConfig, inputs: dict) -> list[str] | None:
    """What differs between the inputs of the work in the stage's folder and `inputs` (None: no work there)."""
    folder = config.output_dir
    if not has_work(folder):
        return None
    recorded = read_inputs(folder / FINAL) if (folder / FINAL).is_dir() else read_inputs(folder)
    if recorded is None:
        return [f"no readable {INPUTS_FILE}: the work in it was made by an earlier version or its record was lost"]
    return differences(recorded, inputs)


def claim_output_dir(config: StageConfig, inputs: dict, restart: bool) -> None:
    """Make the stage's folder hold only work made from `inputs`, and record them; see the module's docstring."""
    folder = config.output_dir
    found = stale_differences(config, inputs)
    if found and not restart:
        shown = "\n  ".join(found[:SHOWN_DIFFERENCES])
        more = f"\n  and {len(found) - SHOWN_DIFFERENCES} more" if len(found) > SHOWN_DIFFERENCES else ""
        raise StageInputsChanged(
            f"{folder} holds a stage made from other inputs:\n  {shown}{more}\n"
            "rerun with --restart to delete its checkpoints and final model and train from the start, "
            "or give the stage another output_dir")
    if found:
        for pattern in STAGE_OUTPUTS:
            for path in folder.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    if read_inputs(folder) != inputs:
        write_inputs(folder, inputs)
