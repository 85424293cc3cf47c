import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from llava_ckd.distill.cache import CacheError, TeacherCache, write_teacher_cache
from llava_ckd.distill.divergences import DivergenceSpec
from llava_ckd.distill.loss import Distiller
from llava_ckd.distill.sparse import SparseTeacherSignal
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.terms import loss_terms
from llava_ckd.models import train_tokenizer
from tests.conftest import colour_records, write_dataset
from tests.distill.conftest import MAX_LENGTH, collate, load_dataset
from tests.tolerance import assert_float32_close, assert_gradients_close, gradient_reductions, loss_reductions


def write_cache(teacher, processor, data, out, top_k, max_length=MAX_LENGTH):
    return write_teacher_cache(
        teacher, processor, data, data.parent / "images", out, top_k, max_length, batch_size=3, samples_per_shard=3
    )


@pytest.fixture
def full_cache(pair, colour_data, tokenizer, tmp_path):
    """The Teacher's signals over the whole vocabulary (k = V), in 3 shards of 3, 3 and 2 samples."""
    _, processor, teacher = pair
    return write_cache(teacher, processor, colour_data, tmp_path / "cache", top_k=len(tokenizer))


def test_cache_holds_every_response_token_of_every_sample(full_cache, pair, colour_data, tokenizer):
    _, processor, _ = pair
    manifest = json.loads((full_cache / "manifest.json").read_text())
    shards = [load_file(full_cache / name) for name in manifest["shards"]]

    assert manifest["sample_ids"] == [f"s{i}" for i in range(8)] and manifest["top_k"] == len(tokenizer)
    assert [len(shard["offsets"]) - 1 for shard in shards] == [3, 3, 2]
    assert sum(len(shard["token_ids"]) for shard in shards) == sum(manifest["response_tokens"])
    assert shards[0]["token_ids"].shape[1] == len(tokenizer)
    assert torch.isneginf(shards[0]["tail_log_mass"]).all()
    TeacherCache(full_cache).check_matches(
        tokenizer, colour_data, colour_data.parent / "images", MAX_LENGTH, load_dataset(colour_data, processor).samples,
        len(tokenizer)
    )


def test_cached_kd_with_the_whole_vocabulary_equals_online_kd(full_cache, pair, colour_data, tokenizer):
    student, processor, teacher = pair
    batch = collate(load_dataset(colour_data, processor), processor, [6, 1, 4], with_sample_index=True)
    weights, spec = loss_terms(dict(ce=0.5, response_kd=2.0)), DivergenceSpec(name="forward_kl")
    parameters = [p for p in student.parameters() if p.requires_grad]

    online_loss, online_terms = Distiller(OnlineTeacher(teacher), weights, spec, len(tokenizer))(student, batch)
    cached_loss, cached_terms = Distiller(TeacherCache(full_cache), weights, spec, len(tokenizer))(student, batch)

    assert online_terms["response_kd"] > 0
    reductions = loss_reductions(batch, len(tokenizer), student, teacher)
    assert_float32_close(cached_loss, online_loss, *reductions)
    assert_float32_close(cached_terms["response_kd"], online_terms["response_kd"], *reductions)
    assert_gradients_close(torch.autograd.grad(cached_loss, parameters, allow_unused=True),
                           torch.autograd.grad(online_loss, parameters, allow_unused=True),
                           *gradient_reductions(batch, len(tokenizer), student, teacher))


def test_a_cache_of_other_data_tokenizer_or_length_is_refused_saying_what_differs(
    full_cache, pair, colour_data, tokenizer, tmp_path
):
    _, processor, _ = pair
    cache, samples = TeacherCache(full_cache), load_dataset(colour_data, processor).samples
    other_records = colour_records(8)
    other_records[2]["conversations"][1]["value"] = "crimson"
    other_data = write_dataset(tmp_path / "other", other_records)

    images = colour_data.parent / "images"
    with pytest.raises(CacheError, match=r"does not match this stage:\n  data file: cached from .*train\.json"):
        cache.check_matches(tokenizer, other_data, images, MAX_LENGTH, samples, len(tokenizer))
    with pytest.raises(CacheError, match="max_length: cached with 64, this stage uses 48"):
        cache.check_matches(tokenizer, colour_data, images, 48, samples, len(tokenizer))
    other_tokenizer = train_tokenizer(["a different corpus of words"] * 20, vocab_size=300)
    with pytest.raises(CacheError, match="tokenizer: the cache was made with another tokenizer"):
        cache.check_matches(other_tokenizer, colour_data, images, MAX_LENGTH, samples, len(tokenizer))
    with pytest.raises(CacheError, match=r"samples: the cache holds 8 samples, this stage keeps 7"):
        cache.check_matches(tokenizer, colour_data, images, MAX_LENGTH, samples[:7], len(tokenizer))
    with pytest.raises(CacheError, match="no Teacher cache in"):
        TeacherCache(tmp_path / "other")


def test_rewriting_a_cache_keeps_a_current_one_and_refuses_to_overwrite_another(pair, colour_data, tmp_path):
    _, processor, teacher = pair
    out = write_cache(teacher, processor, colour_data, tmp_path / "cache", top_k=4)
    stamp = (out / "manifest.json").stat().st_mtime_ns

    assert write_cache(teacher, processor, colour_data, out, top_k=4) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(CacheError, match="already holds a Teacher cache made from other inputs"):
        write_cache(teacher, processor, colour_data, out, top_k=8)


def test_an_interrupted_cache_resumes_keeping_its_finished_shards(pair, colour_data, tokenizer, tmp_path, monkeypatch):
    _, processor, teacher = pair
    reference = write_cache(teacher, processor, colour_data, tmp_path / "reference", top_k=4)

    import llava_ckd.distill.cache as cache_module

    original_write = cache_module._write_shard
    written = []

    def killed_at_second_shard(path, signals, vocab_size):
        if len(written) == 1:
            raise KeyboardInterrupt
        written.append(path.name)
        original_write(path, signals, vocab_size)

    monkeypatch.setattr(cache_module, "_write_shard", killed_at_second_shard)
    with pytest.raises(KeyboardInterrupt):
        write_cache(teacher, processor, colour_data, tmp_path / "cache", top_k=4)
    assert written == ["shard-00000.safetensors"] and not (tmp_path / "cache" / "manifest.json").exists()
    first_shard_written_at = (tmp_path / "cache" / "shard-00000.safetensors").stat().st_mtime_ns

    written.clear()
    monkeypatch.setattr(cache_module, "_write_shard", lambda path, signals, vocab_size: (
        written.append(path.name), original_write(path, signals, vocab_size)))
    resumed = write_cache(teacher, processor, colour_data, tmp_path / "cache", top_k=4)
    assert written == ["shard-00001.safetensors", "shard-00002.safetensors"]
    assert (resumed / "shard-00000.safetensors").stat().st_mtime_ns == first_shard_written_at
    assert not (resumed / "started.json").exists()
    for name in json.loads((reference / "manifest.json").read_text())["shards"]:
        expected, got = load_file(reference / name), load_file(resumed / name)
        for field, tensor in expected.items():
            torch.testing.assert_close(got[field], tensor, rtol=0, atol=0)

    written.clear()
    monkeypatch.setattr(cache_module, "_write_shard", killed_at_second_shard)
    with pytest.raises(KeyboardInterrupt):
        write_cache(teacher, processor, colour_data, tmp_path / "other-k", top_k=4)
    monkeypatch.setattr(cache_module, "_write_shard", original_write)
    write_cache(teacher, processor, colour_data, tmp_path / "other-k", top_k=5)  # other settings: starts afresh
    assert load_file(tmp_path / "other-k" / "shard-00000.safetensors")["token_ids"].shape[1] == 5


def matches(cache_folder, processor, tokenizer, data):
    TeacherCache(cache_folder).check_matches(tokenizer, data, data.parent / "images", MAX_LENGTH,
                                             load_dataset(data, processor).samples, len(tokenizer))


def test_a_cache_whose_images_changed_since_is_refused(pair, colour_data, tokenizer, tmp_path):
    _, processor, teacher = pair
    out = write_cache(teacher, processor, colour_data, tmp_path / "cache", top_k=4)
    image = colour_data.parent / "images" / json.loads(colour_data.read_text())[0]["image"]
    image.write_bytes(image.read_bytes())  # the same pixels, written again: another mtime
    with pytest.raises(CacheError, match=r"images: the 8 images the data names in .*images differ"):
        matches(out, processor, tokenizer, colour_data)


@pytest.fixture
def small_cache(pair, colour_data, tmp_path):
    _, processor, teacher = pair
    return write_cache(teacher, processor, colour_data, tmp_path / "cache", top_k=4)


def test_a_shard_overwritten_cut_short_or_deleted_is_found_before_training_naming_it(
        small_cache, pair, colour_data, tokenizer):
    _, processor, _ = pair
    shard = small_cache / "shard-00001.safetensors"
    original = shard.read_bytes()
    data = bytearray(original)
    data[-64:] = torch.rand(16).numpy().tobytes()  # random floats over the last log-probabilities
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"shard-00001\.safetensors: its sha256 differs from the manifest's"):
        matches(small_cache, processor, tokenizer, colour_data)
    shard.write_bytes(original[: len(original) // 2])
    with pytest.raises(CacheError, match=r"shard-00001\.safetensors: its sha256 differs"):
        matches(small_cache, processor, tokenizer, colour_data)
    shard.unlink()
    with pytest.raises(CacheError, match=r"shard-00001\.safetensors: missing from the Teacher cache"):
        matches(small_cache, processor, tokenizer, colour_data)


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("log_probs", float("nan"), "log-probabilities that are not finite or above 0"),
    ("log_probs", 0.5, "log-probabilities that are not finite or above 0"),
    ("tail_log_mass", 0.1, "tail masses outside"),
    ("token_ids", 10_000, "token ids outside the vocabulary"),
])
def test_shard_values_out_of_range_are_refused_even_with_a_matching_checksum(
        small_cache, pair, colour_data, tokenizer, field, value, problem):
    _, processor, _ = pair
    shard = small_cache / "shard-00002.safetensors"
    tensors = load_file(shard)
    tensors[field].view(-1)[0] = value
    save_file(tensors, shard)
    manifest = json.loads((small_cache / "manifest.json").read_text())
    manifest["checksums"][shard.name] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (small_cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match=rf"shard-00002\.safetensors: holds {problem}"):
        matches(small_cache, processor, tokenizer, colour_data)


def test_a_half_written_manifest_is_named(small_cache):
    text = (small_cache / "manifest.json").read_text()
    (small_cache / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(CacheError, match=r"manifest\.json: unreadable .* cut short or damaged"):
        TeacherCache(small_cache)


def test_a_teacher_giving_non_finite_signals_writes_no_shard(pair, colour_data, tmp_path, monkeypatch):
    _, processor, teacher = pair
    monkeypatch.setattr("llava_ckd.distill.cache.top_k_signal", lambda *args: SparseTeacherSignal(
        torch.zeros(len(args[0]), 4, dtype=torch.long), torch.full((len(args[0]), 4), float("nan")),
        torch.zeros(len(args[0]))))
    with pytest.raises(CacheError, match=r"shard-00000\.safetensors: the Teacher's signals hold log-probabilities"):
        write_cache(teacher, processor, colour_data, tmp_path / "cache", top_k=4)
    assert not list((tmp_path / "cache").glob("shard-*"))
