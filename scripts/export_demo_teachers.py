"""Write the demo's shipped Teachers from a finished study: its `small` and `medium` Teachers (Teacher set 0) in
fp16 with their processor, and the shared vision tower.

    python scripts/export_demo_teachers.py runs/study checkpoints/demo-teachers

`llava-ckd demo` loads them as ready Teachers (in fp32) and builds its Student on the same tokenizer and tower.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from transformers import AutoModel

from llava_ckd.cascade.run import plan_cascade
from llava_ckd.models.build import load_vlm
from llava_ckd.study.summary import own_training

TEACHERS = ("small", "medium")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a finished study's folder (holds recipes/chain-seed-0.yaml)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    cascade = plan_cascade(args.study / "recipes" / "chain-seed-0.yaml")
    shutil.rmtree(args.out, ignore_errors=True)
    for name in TEACHERS:
        node = own_training(cascade, f"teacher-{name}")
        model, processor = load_vlm(node.output)
        model.to(torch.float16).save_pretrained(args.out / name)
        processor.save_pretrained(args.out / name)
        print(f"{name}: {node.output} -> {args.out / name}")
    vision = cascade.recipe.student.vision_init
    AutoModel.from_pretrained(vision).to(torch.float16).save_pretrained(args.out / "vision")
    print(f"vision tower: {vision} -> {args.out / 'vision'}")


if __name__ == "__main__":
    main()
