"""Shared fixtures: a local tokenizer, and a small LLaVA-format dataset written to a temp folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava_ckd.models import train_tokenizer

torch.set_num_threads(1)

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 230), "yellow": (240, 240, 30)}
CORPUS = [
    "<|im_start|>user\nWhat colour is the image? Is it red?<|im_end|>\n<|im_start|>assistant\nred<|im_end|>",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\nHow many objects are there? green blue yellow",
    "Describe the image briefly. A red circle at the top left, a blue square. yes no 0 1 2 3 4 5 6 7 8 9",
]


@pytest.fixture(autouse=True)
def sample_cache_in_tmp(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LLAVA_CKD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(CORPUS * 20, vocab_size=320)


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


def colour_records(n: int) -> list[dict]:
    names = list(COLOURS)
    return [
        {
            "id": f"s{i}",
            "image": f"{i}.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is the image?"},
                {"from": "gpt", "value": names[i % 4]},
                {"from": "human", "value": "Is it red?"},
                {"from": "gpt", "value": "yes" if names[i % 4] == "red" else "no"},
            ],
        }
        for i in range(n)
    ]


def write_dataset(folder: Path, records: list[dict]) -> Path:
    """Write `records` as LLaVA JSON and a plain-colour PNG for each image they name."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for record in records:
        if isinstance(record, dict) and isinstance(record.get("image"), str):
            colour = next((c for name, c in COLOURS.items() if name in json.dumps(record)), (0, 0, 0))
            Image.new("RGB", (32, 32), colour).save(images / record["image"])
    path = folder / "train.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def colour_dataset(tmp_path) -> Path:
    return write_dataset(tmp_path, colour_records(64))
