import json

import pytest
from PIL import Image

from llava_ckd.data import conversations, images
from llava_ckd.data.collator import Collator
from llava_ckd.data.conversations import IGNORE_INDEX, load_conversations
from llava_ckd.files import DataError
from llava_ckd.models import build_preset
from tests.conftest import colour_records, write_dataset


@pytest.fixture(scope="module")
def processor(tokenizer):
    return build_preset("tiny-student", tokenizer)[1]


def load(path, processor, max_length=128):
    return load_conversations(path, path.parent / "images", processor, max_length)


def answer_texts(sample, tokenizer):
    """The labelled tokens, decoded run by run."""
    runs, current = [], []
    for label in sample.labels:
        if label == IGNORE_INDEX:
            if current:
                runs.append(tokenizer.decode(current))
            current = []
        else:
            current.append(label)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_labels_cover_exactly_the_assistant_turns(tmp_path, processor):
    samples, report = load(write_dataset(tmp_path, colour_records(4)), processor)
    assert report.kept == 4 and not report.skipped
    sample = samples[1]  # green
    assert answer_texts(sample, processor.tokenizer) == ["green<|im_end|>", "no<|im_end|>"]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert sample.input_ids.count(image_id) == 16
    assert sample.images == [tmp_path / "images" / "1.png"]


def test_text_only_sample_and_collated_batch(tmp_path, processor):
    records = colour_records(2) + [{"id": "text", "conversations": [
        {"from": "system", "value": "You are a helpful assistant."},
        {"from": "human", "value": "How many objects are there?"},
        {"from": "gpt", "value": "3"}]}]
    samples, _ = load(write_dataset(tmp_path, records), processor)
    assert samples[2].images == []
    assert answer_texts(samples[2], processor.tokenizer) == ["3<|im_end|>"]

    batch = Collator(processor, processor.tokenizer.pad_token_id)(samples)
    assert batch["pixel_values"].shape == (2, 3, 32, 32)  # only the two samples with images
    lengths = [len(s.input_ids) for s in samples]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_image_without_placeholder_is_put_before_the_first_question(tmp_path, processor):
    record = colour_records(1)[0]
    record["conversations"][0]["value"] = "What colour is the image?"
    samples, _ = load(write_dataset(tmp_path, [record]), processor)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert samples[0].input_ids.count(image_id) == 16


def bad_records():
    no_answer = colour_records(1)[0] | {"id": "no-answer"}
    no_answer["conversations"] = no_answer["conversations"][:1]
    two_placeholders = colour_records(1)[0] | {"id": "two-placeholders"}
    two_placeholders["conversations"] = [dict(two_placeholders["conversations"][0]),
                                         *two_placeholders["conversations"][1:]]
    two_placeholders["conversations"][0]["value"] = "<image>\n<image>\nWhat colour is the image?"
    missing_image = colour_records(1)[0] | {"id": "missing-image", "image": "nowhere.png"}
    return [no_answer, two_placeholders, missing_image]


def test_bad_samples_are_skipped_counted_and_named(tmp_path, processor):
    records = colour_records(3) + bad_records()
    path = write_dataset(tmp_path, records)
    (tmp_path / "images" / "nowhere.png").unlink()
    (tmp_path / "images" / "2.png").write_bytes(b"not a png")
    samples, report = load(path, processor)

    assert [s.sample_id for s in samples] == ["s0", "s1"]
    assert report.skipped == {
        "no assistant (gpt) turn": 1,
        "more <image> placeholders than images": 1,
        "image not found": 1,
        "unreadable image": 1,
    }
    summary = report.summary()
    for sample_id in ("no-answer", "two-placeholders", "missing-image", "s2"):
        assert f"sample {sample_id} ({path}[" in summary
    assert "nowhere.png" in summary
    assert json.loads(json.dumps(report.to_dict()))["kept"] == 2


def test_long_samples_are_truncated_when_an_answer_survives_else_dropped(tmp_path, processor):
    long_question = "What colour is the image? " * 40
    keeps_first_answer = colour_records(1)[0] | {"id": "keeps"}
    keeps_first_answer["conversations"] = [*keeps_first_answer["conversations"][:2],
                                           {"from": "human", "value": long_question},
                                           {"from": "gpt", "value": "no"}]
    loses_answer = colour_records(1)[0] | {"id": "loses"}
    loses_answer["conversations"] = [{"from": "human", "value": "<image>\n" + long_question},
                                     {"from": "gpt", "value": "red"}]
    samples, report = load(write_dataset(tmp_path, [keeps_first_answer, loses_answer]), processor, max_length=64)
    assert [s.sample_id for s in samples] == ["keeps"]
    assert len(samples[0].input_ids) == 64 and samples[0].truncated
    assert answer_texts(samples[0], processor.tokenizer) == ["red<|im_end|>"]
    assert report.truncated == 1
    assert report.skipped == {"too long: no answer token before max_length": 1}


def test_malformed_json_names_file_line_and_column(tmp_path, processor):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"id": "a", "conversations": []},\n  {"id": "b" "conversations": []}\n]')
    with pytest.raises(DataError, match=r"broken.json:3:14: malformed JSON"):
        load(path, processor)


def test_malformed_jsonl_line_is_named(tmp_path, processor):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(colour_records(1)[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"data.jsonl:2:2: malformed JSON"):
        load(path, processor)


def test_a_file_not_in_utf8_is_named_with_its_line_column_and_byte(tmp_path, processor):
    path = tmp_path / "latin1.json"
    records = colour_records(2)
    records[1]["conversations"][1]["value"] = "grün"
    path.write_bytes(json.dumps(records, ensure_ascii=False, indent=1).encode("latin-1"))
    jsonl = tmp_path / "latin1.jsonl"
    jsonl.write_bytes("\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode("latin-1"))
    for file in (path, jsonl):
        text = file.read_bytes()
        offset = text.index(b"\xfc")
        line = text[:offset].count(b"\n") + 1
        column = offset - text[:offset].rfind(b"\n")
        with pytest.raises(DataError, match=rf"{file.name}:{line}:{column}: "
                                            rf"not UTF-8 text \(byte {offset} is 0xfc: invalid start byte\)"):
            load(file, processor)


def test_a_missing_image_folder_is_an_error(tmp_path, processor):
    path = write_dataset(tmp_path, colour_records(2))
    with pytest.raises(DataError, match=f"image folder not found: {tmp_path}/elsewhere"):
        load_conversations(path, tmp_path / "elsewhere", processor, 128)


def test_a_file_with_no_usable_sample_is_an_error(tmp_path, processor):
    with pytest.raises(DataError, match="no usable sample"):
        load(write_dataset(tmp_path, bad_records()[:2]), processor)
    with pytest.raises(DataError, match="data file not found"):
        load(tmp_path / "absent.json", processor)


def test_checked_samples_are_cached_until_the_file_changes(tmp_path, processor, monkeypatch):
    path = write_dataset(tmp_path, colour_records(3) + bad_records()[:1])
    first, first_report = load(path, processor)

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr("llava_ckd.data.conversations.encode_all", no_encoding)
    cached, cached_report = load(path, processor)
    assert cached == first
    assert cached_report.to_dict() == first_report.to_dict()

    path.write_text(json.dumps(colour_records(2)))
    with pytest.raises(AssertionError, match="encoded again"):
        load(path, processor)


def test_an_image_named_by_several_records_is_decoded_once(tmp_path, processor, monkeypatch):
    records = colour_records(4)
    for record in records:
        record["image"] = records[0]["image"]
    path = write_dataset(tmp_path, records)
    decoded = []
    monkeypatch.setattr(images, "check_image", lambda image, check=images.check_image: decoded.append(image) or
                        check(image))
    samples, _ = load(path, processor)
    assert len(samples) == 4 and decoded == [tmp_path / "images" / records[0]["image"]]


def test_an_image_cut_short_or_deleted_after_the_first_check_is_found_on_the_next_load(tmp_path, processor):
    path = write_dataset(tmp_path, colour_records(4))
    samples, report = load(path, processor)
    assert len(samples) == 4 and not report.skipped

    image = tmp_path / "images" / "1.png"
    image.write_bytes(image.read_bytes()[:40])
    samples, report = load(path, processor)
    assert [s.sample_id for s in samples] == ["s0", "s2", "s3"]
    assert report.skipped == {"unreadable image": 1} and "1.png" in report.examples["unreadable image"][0]

    (tmp_path / "images" / "2.png").unlink()
    samples, report = load(path, processor)
    assert [s.sample_id for s in samples] == ["s0", "s3"]
    assert report.skipped == {"unreadable image": 1, "image not found": 1}


def test_an_image_changed_during_a_run_is_named_by_the_collator(tmp_path, processor):
    path = write_dataset(tmp_path, colour_records(2))
    samples, _ = load(path, processor)
    samples[1].images[0].write_bytes(b"not a png any more")
    with pytest.raises(DataError, match=r"1\.png: image unreadable .* it changed during the run"):
        Collator(processor, processor.tokenizer.pad_token_id)(samples)


def test_checked_samples_are_kept_as_int32_arrow_and_read_sample_by_sample(tmp_path, processor):
    path = write_dataset(tmp_path, colour_records(5))
    store, _ = load(path, processor)
    fresh = [conversations.ConversationEncoder(processor, tmp_path / "images", 128).encode(record, position)
             for position, record in enumerate(json.loads(path.read_text()))]

    assert str(store.table.schema.field("input_ids").type) == "list<item: int32>"
    assert store == fresh and list(store) == fresh
    assert store[1:4] == fresh[1:4] and store[-1] == fresh[-1] and store[::2] == fresh[::2]
    with pytest.raises(IndexError):
        store[5]


def test_images_checked_on_several_threads_are_checked_as_on_one(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(6):
        Image.new("RGB", (20 + index, 10), (index, 0, 0)).save(folder / f"{index}.png")
    (folder / "3.png").write_bytes((folder / "3.png").read_bytes()[:40])
    paths = [folder / f"{index}.png" for index in range(7)]  # 6.png does not exist

    serial, parallel = images.check_images(paths, threads=1), images.check_images(paths, threads=3)

    assert parallel == serial
    assert serial[folder / "5.png"] == images.ImageCheck((25, 10))
    assert serial[folder / "3.png"].problem == "unreadable image" and serial[folder / "6.png"].problem == (
        "image not found")
