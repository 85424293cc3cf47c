"""The demo in miniature: ready Teachers shipped as a folder, the study machinery, a report that says what its seeds
support; a second run reuses everything."""

import json
import time

import pytest
import torch
from transformers import AutoTokenizer

from llava_ckd.data.synthetic import SyntheticSpec
from llava_ckd.demo import STUDY_FORMS, DemoSettings, prepare_synthetic, run_demo
from llava_ckd.models.build import build_preset
from llava_ckd.train.vision import train_vision_encoder

SPEC = SyntheticSpec(n_train=48, n_val=8, n_test=12, n_captions=16, max_objects=3, forms=STUDY_FORMS)


def shipped_teachers(tmp_path):
    """Untrained `small` and `medium` Teachers in fp16 with the benchmark's tokenizer, and a vision tower, laid out
    as scripts/export_demo_teachers.py writes them."""
    data = tmp_path / "teacher-data"
    prepare_synthetic(data, SPEC)
    folder = tmp_path / "teachers"
    train_vision_encoder(data, folder / "vision", steps=3, batch_size=8)
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    for name, preset in (("small", "ladder-small"), ("medium", "ladder-medium")):
        model, processor = build_preset(preset, tokenizer, vision_init=folder / "vision")
        model.to(torch.float16).save_pretrained(folder / name)
        processor.save_pretrained(folder / name)
    return folder


@pytest.mark.slow
def test_miniature_demo_reports_every_plan_with_paired_differences_and_reuses_finished_work(tmp_path):
    settings = DemoSettings(out=tmp_path / "demo", teachers=shipped_teachers(tmp_path), spec=SPEC, pretrain_steps=2,
                            sft_steps=3, kd_steps=2, batch_size=4, workers=1)
    report = run_demo(settings)

    text = report.read_text()
    for row in ("none", "direct", "top-down", "bottom-up", "direct from small"):
        assert f"| {row} | 2 | 2 |" in text, row     # 2 Student steps after SFT in every row, 2 seeds
    assert "## What 2 seeds can and cannot say" in text
    assert "- direct − none:" in text and "- bottom-up − direct:" in text
    summary = json.loads((settings.out / "study" / "summary.json").read_text())
    assert [teacher["name"] for teacher in summary["teachers"]] == ["small", "medium"]
    assert {row["label"] for row in summary["rows"]} == {"none", "direct", "top-down", "bottom-up",
                                                          "direct from small"}
    assert (settings.out / "study" / "gap.png").stat().st_size > 0

    started = time.perf_counter()
    again = run_demo(settings).read_text()
    assert time.perf_counter() - started < 60

    def without_wall_time(report: str) -> list[str]:
        return [line for line in report.splitlines() if not line.startswith("Wall time")]

    assert without_wall_time(again) == without_wall_time(text)
