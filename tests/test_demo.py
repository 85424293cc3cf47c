"""The demo in miniature: ready Teachers shipped as a folder, the study machinery, a report that says what its seeds
support; a second run reuses everything."""

import json
import time

import pytest
import torch
from transformers import AutoTokenizer

from llava_ckd.data.synthetic import SyntheticSpec
from llava_ckd.demo import DEMO_FORMS, DemoSettings, prepare_synthetic, run_demo
from llava_ckd.models.build import build_preset
from llava_ckd.train.vision import train_vision_encoder

SPEC = SyntheticSpec(n_train=48, n_val=8, n_test=12, n_captions=16, max_objects=3, forms=DEMO_FORMS, blend=0.6,
                     caption_turn=True)


def shipped_teachers(tmp_path):
    """An untrained `small` Teacher in fp16 with the benchmark's tokenizer, and a vision tower, laid out as
    scripts/export_demo_teachers.py writes them."""
    data = tmp_path / "teacher-data"
    prepare_synthetic(data, SPEC)
    folder = tmp_path / "teachers"
    train_vision_encoder(data, folder / "vision", steps=3, batch_size=8)
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    model, processor = build_preset("ladder-small", tokenizer, vision_init=folder / "vision")
    model.to(torch.float16).save_pretrained(folder / "small")
    processor.save_pretrained(folder / "small")
    return folder


@pytest.mark.slow
def test_miniature_demo_reports_kd_against_none_with_paired_differences_and_reuses_finished_work(tmp_path):
    settings = DemoSettings(out=tmp_path / "demo", teachers=shipped_teachers(tmp_path), spec=SPEC, seeds=2,
                            pretrain_steps=2, kd_steps=2, batch_size=4, workers=1)
    report = run_demo(settings)

    text = report.read_text()
    for row in ("none", "direct"):
        assert f"| {row} | 2 | 2 |" in text, row     # 2 Student steps after pretraining in both rows, 2 seeds
    assert "## What 2 seeds can and cannot say" in text
    assert "- direct − none:" in text
    summary = json.loads((settings.out / "study" / "summary.json").read_text())
    assert [teacher["name"] for teacher in summary["teachers"]] == ["small"]
    assert {row["label"] for row in summary["rows"]} == {"none", "direct"}
    assert all(set(row["ablated"][use]["per_seed"]) == {"0", "1"}                 # the vision-use check, per seed
               for row in summary["rows"] for use in ("blank", "shuffled"))
    assert (settings.out / "study" / "plans.png").stat().st_size > 0

    started = time.perf_counter()
    again = run_demo(settings).read_text()
    assert time.perf_counter() - started < 60

    def without_wall_time(report: str) -> list[str]:
        return [line for line in report.splitlines() if not line.startswith("Wall time")]

    assert without_wall_time(again) == without_wall_time(text)
