import pytest

from llava_ckd.study.summary import check_testbed


def teacher(name, parameters, accuracy, moved=None, teacher_set=0):
    plateau = None if moved is None else {"measured": True, "moved": moved}
    return {"name": name, "llm_parameters": parameters, "test_accuracy": accuracy, "plateau": plateau,
            "teacher_set": teacher_set}


def summary(large_accuracy=86.0, kd_gain=(2.0, 0.5)):
    mean, se = kd_gain
    return {
        "teachers": [teacher("small", 100, 70.0, moved=0.4), teacher("medium", 400, 78.0, moved=-1.5),
                     teacher("large", 1700, large_accuracy), teacher("small", 100, 60.0, teacher_set=1)],
        "student": {"sft_accuracy": {"mean": 60.0}, "sft_colour": {"mean": 55.0}},
        "benchmark": {"blind": {"majority_by_template": {"overall": 0.45}}},
        "rows": [{"label": "direct from small", "plan": "direct", "teacher": "small", "teacher_set": 0,
                  "vs_none": {"n": 5, "mean": mean, "se": se}},
                 {"label": "direct from small (Teacher set 1)", "plan": "direct", "teacher": "small",
                  "teacher_set": 1, "vs_none": {"n": 5, "mean": -9.0, "se": 0.1}}],
    }


def test_every_threshold_is_computed_from_the_summary():
    checks = {entry["check"]: entry for entry in check_testbed(summary())}
    assert checks["LLM parameters medium / small"]["value"] == 4 and checks["LLM parameters medium / small"]["met"]
    assert checks["LLM parameters large / medium"]["value"] == pytest.approx(4.25)
    assert checks["test accuracy medium - small"]["value"] == 8.0
    assert checks["test accuracy large - medium"]["met"]
    assert checks["test accuracy of large"]["met"]
    assert checks["val change of small over its last quarter"]["met"]
    assert not checks["val change of medium over its last quarter"]["met"]       # moved 1.5 points
    assert checks["Student colour accuracy after SFT"]["met"]
    assert checks["Student after SFT - template-aware blind guesser"]["value"] == pytest.approx(15.0)
    assert checks["large - Student after SFT"]["value"] == pytest.approx(26.0)
    assert checks["direct from small - none, in standard errors"]["value"] == pytest.approx(4.0)   # set 0 only


def test_unmet_thresholds_say_so():
    checks = {entry["check"]: entry for entry in check_testbed(summary(large_accuracy=80.0, kd_gain=(0.9, 0.5)))}
    assert not checks["test accuracy of large"]["met"]
    assert not checks["direct from small - none, in standard errors"]["met"]     # 1.8 standard errors
