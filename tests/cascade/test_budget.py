"""`budget: per-plan`: every plan's Student gets the same steps after its SFT; `chain_schedule` decides whether
bottom-up's distillations share one learning-rate schedule."""

import pytest

from llava_ckd.cascade.expand import split_steps
from llava_ckd.cascade.plans import STUDENT
from llava_ckd.config import ConfigError
from tests.cascade.conftest import TEMPLATE

ALL_PLANS = ["none", "direct", "top-down", "bottom-up"]


def template(**dft):
    stages = [dict(stage) for stage in TEMPLATE]
    stages[-1] |= {"max_steps": 301} | dft
    return stages


def student_kd_steps(cascade, plan) -> list[tuple[str, int]]:
    """(step, max_steps) of the Student's stages after its SFT in `plan`."""
    return [(node.step, node.job.max_steps) for node in cascade.plans[plan]
            if node.model == STUDENT and node.step.startswith("dft")]


def three_teachers(tokenizer_dir):
    def preset(name):
        return {"preset": name, "tokenizer": str(tokenizer_dir)}

    return [{"name": "small", "model": preset("tiny-student")}, {"name": "middle", "model": preset("tiny-ta")},
            {"name": "large", "model": preset("tiny-teacher")}]


def test_split_steps_gives_near_equal_parts_the_first_ones_longer():
    assert split_steps(301, 2) == [151, 150]
    assert split_steps(300, 3) == [100, 100, 100]
    assert split_steps(11, 3) == [4, 4, 3]


def test_per_plan_budget_gives_every_plan_the_same_student_steps(make_cascade):
    cascade = make_cascade(plans=ALL_PLANS, stages=template(budget="per-plan", without_kd="sft"))
    assert student_kd_steps(cascade, "none") == [("dft", 301)]
    assert student_kd_steps(cascade, "direct") == [("dft-from-tiny-teacher", 301)]
    assert student_kd_steps(cascade, "top-down") == [("dft-from-tiny-ta", 301)]
    assert student_kd_steps(cascade, "bottom-up") == [("dft-from-tiny-ta", 151), ("dft-from-tiny-teacher", 150)]
    # top-down's intermediate Teacher distils from one Teacher: the whole budget
    assert [node.job.max_steps for node in cascade.plans["top-down"] if node.step == "dft-from-tiny-teacher"] == [301]


def test_per_teacher_budget_is_the_paper_layout(make_cascade):
    cascade = make_cascade(plans=ALL_PLANS, stages=template(without_kd="sft"))
    assert student_kd_steps(cascade, "bottom-up") == [("dft-from-tiny-ta", 301), ("dft-from-tiny-teacher", 301)]
    assert student_kd_steps(cascade, "none") == [("dft", 301)]


def test_a_three_teacher_chain_splits_in_three(make_cascade, tokenizer_dir):
    cascade = make_cascade(plans=["bottom-up"], teachers=three_teachers(tokenizer_dir),
                           stages=template(budget="per-plan", max_steps=300))
    assert student_kd_steps(cascade, "bottom-up") == [("dft-from-small", 100), ("dft-from-middle", 100),
                                                      ("dft-from-large", 100)]


def test_continued_schedule_gives_consecutive_windows_of_one_schedule(make_cascade):
    cascade = make_cascade(plans=["bottom-up", "direct"],
                           stages=template(budget="per-plan", chain_schedule="continued"))
    windows = [node.job.schedule_window for node in cascade.plans["bottom-up"]
               if node.model == STUDENT and node.step.startswith("dft")]
    assert [(w.start, w.total) for w in windows] == [(0, 301), (151, 301)]
    (direct,) = [node for node in cascade.plans["direct"] if node.step.startswith("dft")]
    assert (direct.job.schedule_window.start, direct.job.schedule_window.total) == (0, 301)


def test_fresh_schedule_has_no_window(make_cascade):
    cascade = make_cascade(plans=["bottom-up"], stages=template(budget="per-plan"))
    assert all(node.job.schedule_window is None for node in cascade.plans["bottom-up"] if hasattr(node.job, "kind"))


def test_per_plan_budget_needs_max_steps(make_cascade):
    stages = template(budget="per-plan")
    del stages[-1]["max_steps"]
    with pytest.raises(ConfigError, match="budget: per-plan splits max_steps"):
        make_cascade(plans=["bottom-up"], stages=stages)


def test_continued_schedule_needs_a_per_plan_budget(make_cascade):
    with pytest.raises(ConfigError, match="chain_schedule: continued needs budget: per-plan"):
        make_cascade(plans=["bottom-up"], stages=template(chain_schedule="continued"))
