"""The cascades a study runs, each a recipe derived from the study's recipe and written beside its results.

For every Student seed s (the seed of each of the Student's stages: its initialisation and its data order):
  chain                 the recipe's plans over the whole chain;
  direct-<Tk>           `direct` KD from each smaller Teacher Tk alone (the chain cut after Tk): with the chain's
                        `direct`, the capacity-gap axis;
  bottom-up-per-teacher the paper's layout, each distillation running the full budget (when the recipe splits
                        one budget per plan);
  bottom-up-continued   bottom-up under one learning-rate schedule over its distillations (when the recipe's
                        are fresh per stage).
  bottom-up-via-<T...>  with `sub_chains`: bottom-up through each other ascending choice of the smaller Teachers,
                        always ending at the largest (`llava-ckd plan --suggest-chain`'s candidates), each within
                        the same Student budget.
For Teacher set t >= 1 (Teachers retrained with seed t), `direct-<T1>` again: how much the Teacher's own
training moves the Student.

All share one store, so each Teacher, signal cache and Student SFT is trained once and reused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import yaml

from llava_ckd.cascade.plans import STUDENT
from llava_ckd.cascade.recipe import Recipe

CHAIN = "chain"
PER_TEACHER = "bottom-up-per-teacher"
CONTINUED = "bottom-up-continued"
SUB_CHAIN = "bottom-up-via-"


@dataclass(frozen=True)
class Variant:
    name: str
    chain: tuple[str, ...]
    plans: tuple[str, ...]
    distill_settings: dict          # cascade fields set on every distilling template stage
    teacher_set: int = 0


@dataclass(frozen=True)
class Job:
    variant: Variant
    seed: int
    recipe: Path                    # the derived recipe file
    output: Path                    # its cascade.json and results.md


def direct_name(teacher: str) -> str:
    return f"direct-{teacher}"


def sub_chain_name(chain: tuple[str, ...]) -> str:
    return SUB_CHAIN + "-".join(chain)


def sub_chains(chain: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every ascending choice of Teachers that ends at the largest, but for the direct route and the whole chain."""
    smaller = chain[:-1]
    return [kept + chain[-1:] for size in range(1, len(smaller)) for kept in combinations(smaller, size)]


def teacher_set_name(teacher: str, teacher_set: int) -> str:
    return f"{direct_name(teacher)}-teachers-{teacher_set}"


def variants(recipe: Recipe, teacher_sets: int, layouts: bool = True, with_sub_chains: bool = False,
             plans: tuple[str, ...] | None = None) -> list[Variant]:
    """`plans`: those of the recipe's plans the whole chain runs (default: all)."""
    chain = recipe.chain
    found = [Variant(CHAIN, chain, plans or tuple(recipe.plans), {})]
    found += [Variant(direct_name(teacher), chain[: index + 1], ("direct",), {})
              for index, teacher in enumerate(chain[:-1])]
    distilling = [stage for stage in recipe.stages if stage.kind == "distill"]
    splits_budget = distilling and all(stage.budget == "per-plan" for stage in distilling)
    if with_sub_chains:
        found += [Variant(sub_chain_name(kept), kept, ("bottom-up",), {}) for kept in sub_chains(chain)]
    if layouts and "bottom-up" in found[0].plans and len(chain) > 1 and splits_budget:
        found.append(Variant(PER_TEACHER, chain, ("bottom-up",), {"budget": "per-teacher", "chain_schedule": "fresh"}))
        if all(stage.chain_schedule in (None, "fresh") for stage in distilling):
            found.append(Variant(CONTINUED, chain, ("bottom-up",), {"chain_schedule": "continued"}))
    found += [Variant(teacher_set_name(chain[0], t), chain[:1], ("direct",), {}, teacher_set=t)
              for t in range(1, teacher_sets)]
    return found


def derived_recipe(raw: dict, recipe: Recipe, variant: Variant, seed: int, output: Path, store: Path) -> dict:
    """The recipe's YAML data with the variant's chain, plans and settings, the Student's stages seeded `seed`
    and the Teachers' stages seeded by the Teacher set."""
    derived = copy.deepcopy(raw)
    derived["output"] = str(output)
    derived["store"] = str(store)
    derived["teachers"] = [teacher for teacher in raw["teachers"] if teacher["name"] in variant.chain]
    derived["plans"] = list(variant.plans)
    for stage in derived["stages"]:
        if stage["kind"] == "distill":
            stage.update(variant.distill_settings)
    overrides = [{"stage": stage.name, "model": STUDENT, "set": {"seed": seed}} for stage in recipe.stages]
    if variant.teacher_set:
        overrides += [{"stage": stage.name, "model": teacher, "set": {"seed": variant.teacher_set}}
                      for teacher in variant.chain for stage in recipe.stages]
    kept = [override for override in raw.get("overrides", [])
            if override.get("model") in (None, STUDENT, *variant.chain)]   # not those of Teachers cut off
    derived["overrides"] = kept + overrides
    return derived


def write_jobs(raw: dict, recipe: Recipe, seeds: list[int], teacher_sets: int, root: Path,
               layouts: bool = True, with_sub_chains: bool = False, plans: tuple[str, ...] | None = None) -> list[Job]:
    """Every (variant, seed) cascade of the study, its recipe written under `root/recipes/`."""
    jobs = []
    for variant in variants(recipe, teacher_sets, layouts, with_sub_chains, plans):
        for seed in seeds:
            output = root / "cascades" / variant.name / f"seed-{seed}"
            path = root / "recipes" / f"{variant.name}-seed-{seed}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(derived_recipe(raw, recipe, variant, seed, output, root / "store"),
                                           sort_keys=False))
            jobs.append(Job(variant, seed, path, output))
    return jobs
