"""Write the demo's shipped Teacher from a finished study: its `small` Teacher (Teacher set 0) with its processor,
and the shared vision tower, in fp32 as the study trained them, so that the demo's seeds repeat the study's.

    python scripts/export_demo_teachers.py runs/uncertain checkpoints/demo-teachers

`llava-ckd demo` loads it as a ready Teacher and builds its Student on the same tokenizer and tower.
`--teachers` writes others of the study beside it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from transformers import AutoModel

from llava_ckd.cascade.run import plan_cascade
from llava_ckd.models.build import load_vlm
from llava_ckd.study.summary import own_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a finished study's folder (holds recipes/chain-seed-0.yaml)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--teachers", nargs="+", default=["small"], metavar="NAME", help="the study's Teachers")
    args = parser.parse_args()
    cascade = plan_cascade(args.study / "recipes" / "chain-seed-0.yaml")
    for folder in (*args.teachers, "vision"):   # the folder's README stays
        shutil.rmtree(args.out / folder, ignore_errors=True)
    for name in args.teachers:
        node = own_training(cascade, f"teacher-{name}")
        model, processor = load_vlm(node.output)
        model.save_pretrained(args.out / name)
        processor.save_pretrained(args.out / name)
        print(f"{name}: {node.output} -> {args.out / name}")
    vision = cascade.recipe.student.vision_init
    AutoModel.from_pretrained(vision).save_pretrained(args.out / "vision")
    print(f"vision tower: {vision} -> {args.out / 'vision'}")


if __name__ == "__main__":
    main()
