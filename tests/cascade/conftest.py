"""A recipe over the shared tokenizer and colour dataset, and a stand-in for training that only writes `final/`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from llava_ckd.cascade import plan_cascade
from llava_ckd.models import build_preset
from llava_ckd.train.inputs import FINAL, claim_output_dir, stage_inputs, write_inputs

TEMPLATE = [{"name": "pretrain", "kind": "pretrain", "max_steps": 1},
            {"name": "sft", "kind": "sft", "max_steps": 2},
            {"name": "dft", "kind": "distill", "max_steps": 2, "losses": {"ce": 1.0, "response_kd": 1.0}}]


def recipe_dict(root: Path, tokenizer_dir: Path, dataset: Path, plans=("none", "direct", "top-down", "bottom-up"),
                **changes) -> dict:
    def preset(name):
        return {"preset": name, "tokenizer": str(tokenizer_dir)}

    recipe = {
        "output": str(root / "out"),
        "student": preset("tiny-student"),
        "teachers": [{"name": "tiny-ta", "model": preset("tiny-ta")},
                     {"name": "tiny-teacher", "model": preset("tiny-teacher")}],
        "defaults": {"data": {"conversations": str(dataset), "images": str(dataset.parent / "images"),
                              "max_length": 64},
                     "batch_size": 4, "learning_rate": 1e-3},
        "stages": copy.deepcopy(TEMPLATE),
        "plans": list(plans),
    }
    return recipe | changes


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def make_cascade(tmp_path, tokenizer_dir, colour_dataset):
    """`make_cascade(plans=..., **changes)`: the expanded cascade of a recipe written to tmp_path/recipe.yaml."""
    def make(**changes):
        return plan_cascade(write_recipe(tmp_path / "recipe.yaml", recipe_dict(tmp_path, tokenizer_dir,
                                                                                colour_dataset, **changes)))

    return make


@pytest.fixture(scope="session")
def ready_teacher(tokenizer, tmp_path_factory) -> tuple[Path, int]:
    """A saved tiny-teacher checkpoint (a ready Teacher) and its parameter count."""
    model, processor = build_preset("tiny-teacher", tokenizer)
    folder = tmp_path_factory.mktemp("ready-teacher")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, sum(parameter.numel() for parameter in model.parameters())


@pytest.fixture
def fake_training(monkeypatch):
    """Replace training with writing `final/` (the resolved config, metrics): returns the trained output dirs."""
    trained: list[Path] = []

    def run_stage(config, callbacks=(), restart=False):
        trained.append(config.output_dir)
        inputs = stage_inputs(config)
        claim_output_dir(config, inputs, restart)
        final = config.output_dir / FINAL
        final.mkdir(parents=True, exist_ok=True)
        write_inputs(final, inputs)
        (final / "metrics.json").write_text(json.dumps({"global_step": config.max_steps}))
        return final

    monkeypatch.setattr("llava_ckd.cascade.run.run_stage", run_stage)
    return trained
