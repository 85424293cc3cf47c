"""The paper recipes' world at tiny width: a Hugging Face hub cache holding the hub ids they name, and LLaVA data.

The cache holds random-init models of the published classes and shapes shrunk in width and depth
(`llava_ckd.models.published`, `tiny=True`): a whole `SiglipModel` at 384 px / patch 14 (729 image tokens)
with SigLIP's preprocessor config, as google/siglip-so400m-patch14-384 holds; Qwen2ForCausalLM at each
Qwen2.5 size with its real LM-head rows (151,936; 152,064 for 7B) and tying, each saved with one local
ChatML tokenizer. Nothing is downloaded: `HF_HUB_OFFLINE` is on and the cache lives in a temp folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from PIL import Image
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM, SiglipConfig, SiglipModel

from llava_ckd.models import published, train_tokenizer

PRETRAIN = Path("data/LLaVA-Pretrain")
INSTRUCT = Path("data/LLaVA-Instruct")
PRETRAIN_JSON = PRETRAIN / "blip_laion_cc_sbu_558k.json"
INSTRUCT_JSON = INSTRUCT / "llava_v1_5_mix665k.json"

# Records in the two files' formats: 558K captions (the <image> before or after the instruction),
# the 665K mix (multi-turn with an image in one of its folders, and text-only ShareGPT).
PRETRAIN_RECORDS = [
    {"id": "004539375", "image": "00453/004539375.jpg",
     "conversations": [{"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
                       {"from": "gpt", "value": "a red bus parked beside a white building"}]},
    {"id": "002239345", "image": "00223/002239345.jpg",
     "conversations": [{"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
                       {"from": "gpt", "value": "a green field under a blue sky"}]},
]
INSTRUCT_RECORDS = [
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
                       {"from": "gpt", "value": "The bus in the image is white and red."},
                       {"from": "human", "value": "What feature can be seen on the back of the bus?"},
                       {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "i6IyJda_0", "model": "",
     "conversations": [{"from": "human", "value": "How to tell if a customer segment is well segmented? "
                                                  "In 3 bullet points."},
                       {"from": "gpt", "value": "1. Homogeneity 2. Distinctiveness 3. Reachability"}]},
]
IMAGE_COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 210)]

# google/siglip-so400m-patch14-384's preprocessor_config.json
SIGLIP_PREPROCESSOR = {
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5], "processor_class": "SiglipProcessor",
    "resample": 3, "rescale_factor": 1 / 255, "size": {"height": 384, "width": 384},
}


def snapshot(cache: Path, repo_id: str) -> Path:
    """The folder `models--org--name/snapshots/<hash>/` that `refs/main` points at, as the hub client lays it out."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    folder = repo / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def corpus() -> list[str]:
    texts = [turn["value"] for record in PRETRAIN_RECORDS + INSTRUCT_RECORDS for turn in record["conversations"]]
    return ["user assistant system You are a helpful assistant."] + texts * 10


def build_hub(cache: Path) -> PreTrainedTokenizerFast:
    """Write every checkpoint the paper recipes name into `cache`; returns the tokenizer saved with each LLM."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer(corpus(), vocab_size=400)
    vision = published.vision_config(published.SIGLIP_SO400M, tiny=True)
    text = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                max_position_embeddings=64)
    folder = snapshot(cache, published.SIGLIP_SO400M)
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision.to_dict())).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(SIGLIP_PREPROCESSOR, indent=2))
    for name in published.QWEN25_SHAPES:
        folder = snapshot(cache, name)
        Qwen2ForCausalLM(published.text_config(name, tiny=True)).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return tokenizer


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory) -> tuple[Path, PreTrainedTokenizerFast]:
    """A hub cache folder with every model the paper recipes name, at tiny width, and their tokenizer."""
    cache = tmp_path_factory.mktemp("hf-home") / "hub"
    return cache, build_hub(cache)


@pytest.fixture
def offline_hub(tiny_hub, monkeypatch) -> Path:
    """Point the hub client at the tiny cache, offline. huggingface_hub reads these variables once, at import, and
    looks the values up in its `constants` module at each call, so both the environment and the module are set."""
    cache, _ = tiny_hub
    settings = {"HF_HOME": str(cache.parent), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": True}
    for name, value in settings.items():
        monkeypatch.setenv(name, "1" if value is True else value)
        monkeypatch.setattr(huggingface_hub.constants, name, value)
    return cache


def write_image(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 32), colour).save(path)


def write_paper_data(root: Path) -> None:
    """The two LLaVA files at the paths the paper recipes name, under `root`, with an image for every record."""
    for folder, path, records in ((PRETRAIN, PRETRAIN_JSON, PRETRAIN_RECORDS),
                                  (INSTRUCT, INSTRUCT_JSON, INSTRUCT_RECORDS)):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(json.dumps(records))
        for index, record in enumerate(records):
            if "image" in record:
                write_image(root / folder / "images" / record["image"], IMAGE_COLOURS[index % len(IMAGE_COLOURS)])


@pytest.fixture
def paper_workdir(tmp_path, monkeypatch) -> Path:
    """A working folder holding the recipes' data files, made the current directory (recipe paths are relative)."""
    write_paper_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path
