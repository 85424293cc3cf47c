"""The cascade: a recipe (`recipe.py`) -> who distils from whom in each plan (`plans.py`) -> content-addressed
stages in run order (`expand.py`) -> resumable runs with manifests (`run.py`) -> each plan's Student scored
(`results.py`)."""

from llava_ckd.cascade.expand import Cascade, Node
from llava_ckd.cascade.recipe import Recipe, load_recipe
from llava_ckd.cascade.run import describe, plan_cascade, run_cascade

__all__ = ["Cascade", "Node", "Recipe", "describe", "load_recipe", "plan_cascade", "run_cascade"]
