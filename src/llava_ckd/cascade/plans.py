"""Where the cascade order is decided: in each plan, which Teachers each model distils from, and in what order.

The chain is the recipe's Teachers listed smallest first, T1 < T2 < ... < Tn (by parameter count):
  none       the Student is not distilled (its non-distilling stages only, e.g. pretrain -> SFT);
  direct     the Student distils from Tn only;
  bottom-up  CKD: the Student distils from T1, then T2, ..., then Tn, each time starting from the
             Student the previous distillation produced;
  top-down   TAKD: T(n-1) first distils from Tn, T(n-2) from that distilled T(n-1), ..., and the
             Student from the distilled T1.
A model that a plan does not distil trains on its own (the stage template without its distilling stages).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Literal, get_args

PlanName = Literal["none", "direct", "top-down", "bottom-up"]
PLAN_NAMES: tuple[str, ...] = get_args(PlanName)
STUDENT = "student"


def distils_from(plan: PlanName, chain: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Model name (`student` or a Teacher's) -> the Teachers it distils from, in order; absent: not distilled."""
    if plan == "none":
        return {}
    if plan == "direct":
        return {STUDENT: (chain[-1],)}
    if plan == "bottom-up":
        return {STUDENT: tuple(chain)}
    intermediate = {smaller: (larger,) for smaller, larger in pairwise(chain)}
    return {STUDENT: (chain[0],), **intermediate}
