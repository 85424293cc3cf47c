"""Processors that hold a video processor, loaded where it cannot be built (this machine has no torchvision); what
the processors give for images and text is checked against each family's written-out inputs in
tests/families/test_cross_family.py and through every stage in tests/families/test_families.py."""

from __future__ import annotations

import json
import logging

import pytest
from transformers import AutoVideoProcessor
from transformers.utils import is_torchvision_available

from llava_ckd.models.build import ModelError, load_vlm
from tests.families.conftest import FAMILIES, save

VIDEO_PROCESSORS = {"qwen2.5-vl": "Qwen2VLVideoProcessor", "qwen3-vl": "Qwen3VLVideoProcessor",
                    "internvl": "InternVLVideoProcessor", "llava-onevision": "LlavaOnevisionVideoProcessor"}


@pytest.mark.parametrize("name", list(VIDEO_PROCESSORS))
def test_a_saved_processor_without_video_names_the_familys_video_processor(name, tmp_path):
    """Saved without its video processor, the folder still tells `AutoVideoProcessor` which one the family has, so
    plain `AutoProcessor` builds the whole processor where torchvision is installed."""
    _, processor = FAMILIES[name].build(32, 0)
    processor.save_pretrained(tmp_path)

    if is_torchvision_available():
        assert type(AutoVideoProcessor.from_pretrained(tmp_path)).__name__ == VIDEO_PROCESSORS[name]
    else:
        with pytest.raises(ImportError, match="requires the Torchvision library"):
            AutoVideoProcessor.from_pretrained(tmp_path)


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
