import time

import pytest

from llava_ckd.demo import PLANS, SIZES, DemoSettings, run_demo


@pytest.mark.slow
def test_miniature_demo_trains_every_size_runs_every_plan_reports_and_reuses_finished_work(tmp_path):
    settings = DemoSettings(out=tmp_path, n_train=160, n_captions=64, n_test=40, vision_steps=20,
                            pretrain_steps=3, sft_steps=4, kd_steps=3, batch_size=8)
    report = run_demo(settings)

    text = report.read_text()
    for size in SIZES:
        assert f"| {size} |" in text
    assert "| majority answer |" in text
    for plan in PLANS:
        assert f"| student: {plan} |" in text
    assert "| bottom-up/student/kd-from-tiny-teacher |" in text  # wall time per stage
    assert "| tiny-teacher/sft |" in text
    assert (tmp_path / "accuracy.png").stat().st_size > 10_000
    for size in SIZES:
        assert (tmp_path / "runs" / size / "sft" / "final" / "model.safetensors").is_file()
        assert (tmp_path / "eval" / size / "answers.jsonl").read_text().count("\n") == 40

    model_file = tmp_path / "runs" / "tiny-teacher" / "sft" / "final" / "model.safetensors"
    stamp = model_file.stat().st_mtime_ns
    started = time.perf_counter()
    assert run_demo(settings).read_text() == text
    assert time.perf_counter() - started < 30
    assert model_file.stat().st_mtime_ns == stamp
