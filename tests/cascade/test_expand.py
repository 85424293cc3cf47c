import pytest

ALL_PLANS = ("none", "direct", "top-down", "bottom-up")


def wiring(cascade) -> list[tuple[str, str, str]]:
    """Each stage in run order: (name, the stage it starts from, its Teacher)."""
    return [(cascade.name(node), cascade.name(node.inputs["model"]) if "model" in node.inputs else "-",
             cascade.teacher_of(node)) for node in cascade.stages]


EXPECTED_WIRING = {
    "none": [
        ("student/pretrain", "-", "-"),
        ("student/sft", "student/pretrain", "-"),
    ],
    "direct": [
        ("teacher-tiny-teacher/pretrain", "-", "-"),
        ("teacher-tiny-teacher/sft", "teacher-tiny-teacher/pretrain", "-"),
        ("student/pretrain", "-", "-"),
        ("student/sft", "student/pretrain", "-"),
        ("direct/student/dft-from-tiny-teacher", "student/sft", "teacher-tiny-teacher/sft"),
    ],
    "top-down": [
        ("teacher-tiny-ta/pretrain", "-", "-"),
        ("teacher-tiny-ta/sft", "teacher-tiny-ta/pretrain", "-"),
        ("teacher-tiny-teacher/pretrain", "-", "-"),
        ("teacher-tiny-teacher/sft", "teacher-tiny-teacher/pretrain", "-"),
        ("top-down/teacher-tiny-ta/dft-from-tiny-teacher", "teacher-tiny-ta/sft", "teacher-tiny-teacher/sft"),
        ("student/pretrain", "-", "-"),
        ("student/sft", "student/pretrain", "-"),
        ("top-down/student/dft-from-tiny-ta", "student/sft", "top-down/teacher-tiny-ta/dft-from-tiny-teacher"),
    ],
    "bottom-up": [
        ("teacher-tiny-ta/pretrain", "-", "-"),
        ("teacher-tiny-ta/sft", "teacher-tiny-ta/pretrain", "-"),
        ("teacher-tiny-teacher/pretrain", "-", "-"),
        ("teacher-tiny-teacher/sft", "teacher-tiny-teacher/pretrain", "-"),
        ("student/pretrain", "-", "-"),
        ("student/sft", "student/pretrain", "-"),
        ("bottom-up/student/dft-from-tiny-ta", "student/sft", "teacher-tiny-ta/sft"),
        ("bottom-up/student/dft-from-tiny-teacher", "bottom-up/student/dft-from-tiny-ta", "teacher-tiny-teacher/sft"),
    ],
}


@pytest.mark.parametrize("plan", ALL_PLANS)
def test_each_plan_expands_to_its_stages_in_order(make_cascade, plan):
    cascade = make_cascade(plans=[plan])
    assert wiring(cascade) == EXPECTED_WIRING[plan]
    assert cascade.name(cascade.students[plan]) == EXPECTED_WIRING[plan][-1][0]


def test_stage_configs_chain_checkpoints_and_teachers(make_cascade):
    cascade = make_cascade(plans=["bottom-up"])
    by_name = {cascade.name(node): node for node in cascade.stages}
    first, second = by_name["bottom-up/student/dft-from-tiny-ta"], by_name["bottom-up/student/dft-from-tiny-teacher"]
    assert second.job.model.path == str(first.output)
    assert first.job.model.path == str(by_name["student/sft"].output)
    assert second.job.teacher.kind == "online"
    assert second.job.teacher.model.path == str(by_name["teacher-tiny-teacher/sft"].output)
    assert by_name["student/pretrain"].job.model.preset == "tiny-student"
    assert second.job.kind == "distill" and by_name["student/sft"].job.kind == "sft"
    assert [node.job.output_dir.parent.name for node in cascade.stages[:2]] == ["teacher-tiny-ta"] * 2


def test_plans_share_stages_identified_by_content(make_cascade):
    alone = {plan: make_cascade(plans=[plan]) for plan in ALL_PLANS}
    together = make_cascade()

    assert len(together.stages) == 11
    for plan, cascade in alone.items():
        assert {node.hash for node in together.plans[plan]} == {node.hash for node in cascade.stages}
    shared = {together.name(node): together.plans_of(node) for node in together.stages}
    assert shared["student/sft"] == list(ALL_PLANS)
    assert shared["teacher-tiny-teacher/sft"] == ["direct", "top-down", "bottom-up"]
    assert shared["teacher-tiny-ta/sft"] == ["top-down", "bottom-up"]
    # Same step, other Teacher model behind it: distinct stages.
    assert shared["top-down/student/dft-from-tiny-ta"] == ["top-down"]
    assert shared["bottom-up/student/dft-from-tiny-ta"] == ["bottom-up"]
    assert len({node.directory for node in together.stages}) == 11


def test_a_teacher_is_the_same_stages_wherever_it_stands_in_the_chain(make_cascade, tokenizer_dir):
    """A study's sub-chains drop Teachers from the middle of the list: the Teachers left keep their stages."""
    def teacher(name, preset):
        return {"name": name, "model": {"preset": preset, "tokenizer": str(tokenizer_dir)}}

    whole = make_cascade(plans=["bottom-up"], teachers=[teacher("a", "tiny-student"), teacher("b", "tiny-ta"),
                                                         teacher("c", "tiny-teacher")])
    without_a = make_cascade(plans=["bottom-up"], teachers=[teacher("b", "tiny-ta"), teacher("c", "tiny-teacher")])

    def teacher_stages(cascade):
        return {cascade.name(node): node.hash for node in cascade.stages if node.model != "student"}

    kept = teacher_stages(without_a)
    assert kept and {name: teacher_stages(whole)[name] for name in kept} == kept


def test_overrides_select_stages_by_plan_and_model(make_cascade):
    cascade = make_cascade(overrides=[
        {"stage": "sft", "plan": "direct", "model": "student", "set": {"max_steps": 9}},
        {"stage": "sft", "model": "tiny-ta", "set": {"learning_rate": 0.01}},
        {"stage": "dft", "plan": "bottom-up", "set": {"teachers": ["tiny-teacher"]}},
    ])
    rows = {row[0]: row[1:] for row in wiring(cascade)}
    by_name = {cascade.name(node): node for node in cascade.stages}
    assert by_name["direct/student/sft"].job.max_steps == 9
    assert by_name["none+top-down+bottom-up/student/sft"].job.max_steps == 2
    assert by_name["teacher-tiny-ta/sft"].job.learning_rate == 0.01
    assert by_name["teacher-tiny-teacher/sft"].job.learning_rate == 1e-3
    assert rows["bottom-up/student/dft-from-tiny-teacher"] == ("none+top-down+bottom-up/student/sft",
                                                               "teacher-tiny-teacher/sft")
    assert rows["direct/student/dft-from-tiny-teacher"] == ("direct/student/sft", "teacher-tiny-teacher/sft")
    assert not any("bottom-up" in name and "dft-from-tiny-ta" in name for name in rows)


def test_plans_that_come_to_the_same_stages_share_them(make_cascade):
    cascade = make_cascade(plans=["direct", "bottom-up"],
                           overrides=[{"stage": "dft", "plan": "bottom-up", "set": {"teachers": ["tiny-teacher"]}}])
    assert cascade.students["direct"] is cascade.students["bottom-up"]
    assert cascade.name(cascade.students["direct"]) == "direct+bottom-up/student/dft-from-tiny-teacher"
    assert len(cascade.stages) == 5


def test_three_teacher_top_down_distils_each_teacher_from_the_next_larger(make_cascade, tokenizer_dir):
    def teacher(name, preset, capacity):
        return {"name": name, "model": {"preset": preset, "tokenizer": str(tokenizer_dir)}, "capacity": capacity}

    cascade = make_cascade(plans=["top-down"], teachers=[teacher("a", "tiny-student", 1), teacher("b", "tiny-ta", 2),
                                                         teacher("c", "tiny-teacher", 3)])
    distilled = [row for row in wiring(cascade) if row[2] != "-"]
    assert distilled == [
        ("top-down/teacher-b/dft-from-c", "teacher-b/sft", "teacher-c/sft"),
        ("top-down/teacher-a/dft-from-b", "teacher-a/sft", "top-down/teacher-b/dft-from-c"),
        ("top-down/student/dft-from-a", "student/sft", "top-down/teacher-a/dft-from-b"),
    ]
    assert cascade.capacities == {"a": 1, "b": 2, "c": 3}


def test_a_distilled_pretrain_runs_plain_where_nothing_is_distilled(make_cascade, colour_dataset):
    dpt = {"name": "dpt", "kind": "distill", "without_kd": "pretrain", "train": ["projector"], "max_steps": 1,
           "losses": {"ce": 1.0, "response_kd": 1.0, "visual_kd": 1.0}}
    cascade = make_cascade(plans=["none", "bottom-up"], stages=[dpt, {"name": "sft", "kind": "sft"}])
    kinds = {cascade.name(node): (node.job.kind, node.job.trained_parts) for node in cascade.stages}
    assert kinds == {
        "teacher-tiny-ta/dpt": ("pretrain", ("projector",)),
        "teacher-tiny-ta/sft": ("sft", ("projector", "llm")),
        "teacher-tiny-teacher/dpt": ("pretrain", ("projector",)),
        "teacher-tiny-teacher/sft": ("sft", ("projector", "llm")),
        "student/dpt": ("pretrain", ("projector",)),
        "none/student/sft": ("sft", ("projector", "llm")),  # the other student/sft builds on a distillation
        "bottom-up/student/dpt-from-tiny-ta": ("distill", ("projector",)),
        "bottom-up/student/dpt-from-tiny-teacher": ("distill", ("projector",)),
        "bottom-up/student/sft": ("sft", ("projector", "llm")),
    }


def test_cached_signals_are_written_once_per_teacher_before_the_stages_that_read_them(make_cascade):
    cascade = make_cascade(plans=["direct", "bottom-up"], overrides=[
        {"stage": "dft", "set": {"signals": "cached", "top_k": 8}}])
    names = [cascade.name(node) for node in cascade.stages]
    assert names.index("teacher-tiny-teacher/signals-train") < names.index("direct/student/dft-from-tiny-teacher")
    assert names.count("teacher-tiny-teacher/signals-train") == 1
    signals = cascade.stages[names.index("teacher-tiny-ta/signals-train")]
    assert signals.job.teacher.path == str(cascade.stages[names.index("teacher-tiny-ta/sft")].output)
    assert signals.job.top_k == 8
    stage = cascade.stages[names.index("bottom-up/student/dft-from-tiny-ta")]
    assert stage.job.teacher.kind == "cached" and stage.job.teacher.path == signals.output
    assert cascade.teacher_of(stage) == "teacher-tiny-ta/sft [cached signals]"


def test_a_ready_teacher_checkpoint_is_used_as_it_is(make_cascade, tmp_path, ready_teacher):
    folder, parameters = ready_teacher
    cascade = make_cascade(plans=["direct"], teachers=[
        {"name": "tiny-ta", "model": {"preset": "tiny-ta", "tokenizer": str(tmp_path)}, "capacity": 10},
        {"name": "big", "model": {"path": str(folder)}}])
    assert [cascade.name(node) for node in cascade.stages] == [
        "student/pretrain", "student/sft", "direct/student/dft-from-big"]
    assert cascade.stages[-1].job.teacher.model.path == str(folder)
    assert cascade.teacher_of(cascade.stages[-1]) == f"big ({folder})"
    assert cascade.capacities["big"] == parameters
