"""Val learning curves of `none` and of direct KD from one Teacher: a study's Student stage rerun with a checkpoint
every N steps, each checkpoint scored on val (soft accuracy and the mean log-likelihood of the answer distribution),
written to OUT/curves.json and plotted per seed with the mean in OUT/curves.png.

    python scripts/learning_curves.py configs/cascade/uncertain.yaml --teacher small --seeds 2 --every 250 \
        --out runs/uncertain-curves --store runs/uncertain/store

With the study's `--store`, the Teachers, their signals and the Student's pretraining are reused; only the
Student's distilling stage runs again (its checkpoint settings make it another stage). Rerunning resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import yaml  # noqa: E402

from llava_ckd.cascade.plans import STUDENT  # noqa: E402
from llava_ckd.cascade.recipe import Recipe, load_recipe  # noqa: E402
from llava_ckd.cascade.run import plan_cascade, run_cascade  # noqa: E402
from llava_ckd.config import read_yaml  # noqa: E402
from llava_ckd.study.summary import evaluated  # noqa: E402
from llava_ckd.study.variants import Variant, derived_recipe, direct_name  # noqa: E402
from llava_ckd.train.stage import numbered_checkpoints  # noqa: E402

PLANS = ("none", "direct")


def curve_recipe(recipe_path: Path, teacher: str, seed: int, every: int, out: Path, store: Path) -> Path:
    """The study's recipe cut after `teacher`, plans `none` and `direct`, the Student's distilling stages
    checkpointed every `every` steps and every checkpoint kept, the final models scored on val."""
    raw, recipe = read_yaml(recipe_path), load_recipe(recipe_path)
    chain = recipe.chain[: recipe.chain.index(teacher) + 1]
    derived = derived_recipe(raw, recipe, Variant(direct_name(teacher), chain, PLANS, {}), seed,
                             out / "cascades" / f"seed-{seed}", store)
    derived["evaluation"]["data"] = derived["evaluation"]["val"]
    for stage in recipe.stages:
        if stage.kind == "distill":
            keep = (stage.max_steps or every) // every + 1
            derived["overrides"].append({"stage": stage.name, "model": STUDENT,
                                         "set": {"save_steps": every, "save_total_limit": keep}})
    path = out / "recipes" / f"seed-{seed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(derived, sort_keys=False))
    return path


def checkpoint_scores(stage_dir: Path, recipe: Recipe) -> list[dict]:
    """Every checkpoint of a stage, scored on val, by step (answers kept where the study's plateau check keeps
    them)."""
    scores = []
    for step, checkpoint in numbered_checkpoints(stage_dir):
        result = evaluated(checkpoint, stage_dir / "eval" / checkpoint.name, recipe, "val")
        scores.append({"step": step, "accuracy": result["accuracy"], "log_likelihood": result.get("log_likelihood")})
    return scores


def plot(curves: dict, path: Path, teacher: str) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric, label in ((axes[0], "accuracy", "val soft accuracy (%)"),
                                (axes[1], "log_likelihood", "val mean log-likelihood of the answers")):
        for plan, colour in zip(PLANS, ("tab:grey", "tab:blue"), strict=True):
            runs = curves[plan]
            for points in runs.values():
                axis.plot([p["step"] for p in points], [p[metric] for p in points], color=colour, alpha=0.3,
                          linewidth=1)
            steps = [p["step"] for p in next(iter(runs.values()))]
            mean = [sum(points[i][metric] for points in runs.values()) / len(runs) for i in range(len(steps))]
            name = "none" if plan == "none" else f"direct from {teacher}"
            axis.plot(steps, mean, color=colour, linewidth=2.5, marker="o", label=f"{name} (mean of {len(runs)})")
        axis.set_xlabel("Student distillation step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle("Val learning curves (thin: one seed)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path, help="the study's recipe")
    parser.add_argument("--teacher", required=True, help="the Teacher `direct` distils from (a name in the recipe)")
    parser.add_argument("--seeds", type=int, default=2, help="Student seeds 0..N-1")
    parser.add_argument("--every", type=int, default=250, help="steps between checkpoints")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True, help="the study's stage store, to reuse its stages")
    args = parser.parse_args()
    curves: dict[str, dict[int, list[dict]]] = {plan: {} for plan in PLANS}
    for seed in range(args.seeds):
        cascade = plan_cascade(curve_recipe(args.recipe, args.teacher, seed, args.every, args.out, args.store))
        run_cascade(cascade)
        for plan in PLANS:
            curves[plan][seed] = checkpoint_scores(cascade.students[plan].job.output_dir, cascade.recipe)
            print(f"seed {seed} {plan}: " + ", ".join(f"{p['step']}: {p['accuracy']:.1f}" for p in curves[plan][seed]))
    (args.out / "curves.json").write_text(json.dumps({"teacher": args.teacher, "curves": curves}, indent=2) + "\n")
    plot(curves, args.out / "curves.png", args.teacher)
    print(f"curves.json and curves.png in {args.out}")


if __name__ == "__main__":
    main()
