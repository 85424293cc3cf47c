"""Processors that hold a video processor, loaded where it cannot be built (this machine has no torchvision); what
the processors give for images and text is checked against each family's written-out inputs in
tests/families/test_cross_family.py and through every stage in tests/families/test_families.py."""

from __future__ import annotations

import json
import logging

import pytest
from transformers.models.auto.video_processing_auto import AutoVideoProcessor
from transformers.utils import is_torchvision_available

from llava_ckd.models.build import ModelError, load_vlm
from tests.families.conftest import FAMILIES, save

INFERRED_VIDEO_PROCESSORS = {"qwen2.5-vl": "Qwen2VLVideoProcessor", "internvl": "InternVLVideoProcessor",
                             "llava-onevision": "LlavaOnevisionVideoProcessor"}
"""What transformers infers from the image processor's config, as for released checkpoints without a video config."""


def assert_names_video_processor(folder, name):
    """`AutoVideoProcessor` on `folder` finds video processor `name`: builds it, or, without torchvision, fails on
    it (a folder without any: "Can't load video processor", an OSError)."""
    if is_torchvision_available():
        assert type(AutoVideoProcessor.from_pretrained(folder)).__name__ == name
    else:
        with pytest.raises((ImportError, ValueError), match=f"{name} requires the Torchvision|requires `torchvision`"):
            AutoVideoProcessor.from_pretrained(folder)


@pytest.mark.parametrize("name", list(INFERRED_VIDEO_PROCESSORS))
def test_a_processor_built_without_video_saves_what_names_the_familys_video_processor(name, tmp_path):
    save(*FAMILIES[name].build(32, 0), tmp_path)
    assert_names_video_processor(tmp_path, INFERRED_VIDEO_PROCESSORS[name])


def test_a_loaded_processor_without_video_saves_the_checkpoints_video_processor_settings(tmp_path):
    save(*FAMILIES["qwen3-vl"].build(32, 0), tmp_path / "released")
    settings = {"video_processor_type": "Qwen3VLVideoProcessor", "patch_size": 14, "merge_size": 2, "fps": 2}
    (tmp_path / "released" / "video_preprocessor_config.json").write_text(json.dumps(settings))

    _, processor = load_vlm(tmp_path / "released")
    processor.save_pretrained(tmp_path / "saved")

    assert json.loads((tmp_path / "saved" / "video_preprocessor_config.json").read_text()) == settings
    assert_names_video_processor(tmp_path / "saved", "Qwen3VLVideoProcessor")


def test_without_torchvision_the_processor_is_built_without_video_and_says_so_once(tmp_path, caplog):
    save(*FAMILIES["qwen2.5-vl"].build(32, 0), tmp_path)
    with caplog.at_level(logging.WARNING, logger="llava_ckd.models.processors"):
        _, processor = load_vlm(tmp_path)

    assert type(processor).__mro__[1].__name__ == type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert not hasattr(processor, "video_processor") or is_torchvision_available()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == (0 if is_torchvision_available() else 1)
    if messages:
        assert messages[0].startswith(f"{tmp_path}: the video processor of Qwen2_5_VLProcessor cannot be built (")
        assert messages[0].endswith("using Qwen2_5_VLProcessor without it (images and text are processed as with "
                                    "it, videos are not)")


def test_a_processor_that_also_fails_without_video_stops_with_its_own_error(tmp_path, caplog):
    save(*FAMILIES["qwen2.5-vl"].build(32, 0), tmp_path)
    (tmp_path / "preprocessor_config.json").unlink()
    config = json.loads((tmp_path / "processor_config.json").read_text())
    del config["image_processor"]
    (tmp_path / "processor_config.json").write_text(json.dumps(config))

    with caplog.at_level(logging.WARNING, logger="llava_ckd.models.processors"), \
            pytest.raises(ModelError, match="cannot load model") as error:
        load_vlm(tmp_path)
    assert "image processor" in str(error.value)
    assert not caplog.records
