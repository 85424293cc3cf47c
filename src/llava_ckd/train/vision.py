"""The demo's stand-in for a pretrained SigLIP: a small ViT trained once on the synthetic scenes, then frozen.

Each image token of the 32 px, patch-8 tower covers one cell of the 4x4 scene grid, and is trained to
tell that cell's colour and shape (or that it is empty), row and column through linear probes on its last
hidden state: like SigLIP's patch features, every token says what is there and where.
All Student, TA and Teacher models then start from the same tower, so that what separates them is the
capacity of their language models, as in the paper where every model shares SigLIP.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from tqdm import tqdm
from transformers import CLIPVisionModel

from llava_ckd.data.synthetic import COLOURS, KINDS
from llava_ckd.models.build import preset_image_processor
from llava_ckd.models.presets import clip_vision_config

log = logging.getLogger(__name__)


def cell_labels(scene: dict, grid: int) -> tuple[list[list[float]], list[int]]:
    """Per cell (row-major, as the ViT orders its patches): the probability of each colour (index 0: an empty
    cell), split between a blended shape's two colours as annotators name it, and the shape index (0: empty)."""
    colours = [[1.0] + [0.0] * len(COLOURS) for _ in range(grid * grid)]
    kinds = [0] * grid * grid
    for shape in scene["objects"]:
        cell = shape["row"] * grid + shape["col"]
        colours[cell] = [0.0] * (len(COLOURS) + 1)
        mix = shape.get("mix", 0.0)
        colours[cell][COLOURS.index(shape["colour"]) + 1] += 1 - mix
        if mix:
            colours[cell][COLOURS.index(shape["blend"]) + 1] += mix
        kinds[cell] = KINDS.index(shape["kind"]) + 1
    return colours, kinds


def load_scenes(split_dir: Path, image_processor, grid: int, limit: int | None):
    scenes = [json.loads(line) for line in (split_dir / "scenes.jsonl").read_text().splitlines()][:limit]
    pixels = []
    for start in tqdm(range(0, len(scenes), 512), desc="loading scenes", unit="batch"):
        images = [Image.open(split_dir / "images" / s["image"]).convert("RGB") for s in scenes[start:start + 512]]
        pixels.append(image_processor(images, return_tensors="pt")["pixel_values"])
    labels = [cell_labels(scene, grid) for scene in scenes]
    colours = torch.tensor([colour for colour, _ in labels])
    kinds = torch.tensor([kind for _, kind in labels])
    return torch.cat(pixels), colours, kinds


class CellProbe(nn.Module):
    def __init__(self, tower: CLIPVisionModel):
        super().__init__()
        self.tower = tower
        hidden = tower.config.hidden_size
        grid = tower.config.image_size // tower.config.patch_size
        self.colour = nn.Linear(hidden, len(COLOURS) + 1)
        self.kind = nn.Linear(hidden, len(KINDS) + 1)
        self.row = nn.Linear(hidden, grid)
        self.col = nn.Linear(hidden, grid)
        cells = torch.arange(grid * grid)
        self.register_buffer("rows", cells // grid, persistent=False)
        self.register_buffer("cols", cells % grid, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per image token: colour, shape, row and column logits."""
        tokens = self.tower(pixel_values, output_hidden_states=True).hidden_states[-1][:, 1:]  # drop CLS
        return self.colour(tokens), self.kind(tokens), self.row(tokens), self.col(tokens)

    def loss(self, pixel_values: torch.Tensor, colours: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each probe; the colour probe against the colour probabilities of each cell."""
        colour_logits, kind_logits, row_logits, col_logits = self(pixel_values)
        rows, cols = (index.expand_as(kinds) for index in (self.rows, self.cols))
        colour_loss = nn.functional.cross_entropy(colour_logits.flatten(0, 1), colours.flatten(0, 1))
        return colour_loss + sum(nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
                                 for logits, target in ((kind_logits, kinds), (row_logits, rows), (col_logits, cols)))


def cell_accuracy(probe: CellProbe, pixels, colours, kinds) -> float:
    """Share of cells whose colour (one of the most likely names), shape, row and column the probes all get right."""
    with torch.no_grad():
        colour_logits, kind_logits, row_logits, col_logits = probe(pixels)
    named = colours.gather(-1, colour_logits.argmax(-1, keepdim=True)).squeeze(-1)
    right = (named == colours.amax(-1)) & (kind_logits.argmax(-1) == kinds)
    right &= (row_logits.argmax(-1) == probe.rows) & (col_logits.argmax(-1) == probe.cols)
    return right.float().mean().item()


def train_vision_encoder(data_dir: Path, out: Path, steps: int = 600, batch_size: int = 64,
                         learning_rate: float = 2e-3, seed: int = 0, limit: int | None = 20000) -> Path:
    """Train the tower on `data_dir/train` scenes, report cell accuracy on `data_dir/val`, save to `out`."""
    if (out / "config.json").is_file():
        log.info("vision encoder already trained: %s", out)
        return out
    torch.manual_seed(seed)
    config = clip_vision_config()
    grid = config.image_size // config.patch_size
    image_processor = preset_image_processor(config)
    pixels, colours, kinds = load_scenes(Path(data_dir) / "train", image_processor, grid, limit)
    probe = CellProbe(CLIPVisionModel(config))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    with tqdm(range(steps), desc="vision encoder", unit="step") as progress:
        for _ in progress:
            batch = torch.randint(len(pixels), (batch_size,), generator=generator)
            loss = probe.loss(pixels[batch], colours[batch], kinds[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            progress.set_postfix(loss=f"{loss.item():.3f}")
    val = load_scenes(Path(data_dir) / "val", image_processor, grid, None)
    accuracy = cell_accuracy(probe.eval(), *val)
    log.info("vision encoder: cell colour, shape and place accuracy on val %.4f", accuracy)
    out.mkdir(parents=True, exist_ok=True)
    probe.tower.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps({"val_cell_accuracy": accuracy, "steps": steps}, indent=2))
    return out
