"""Cached Teacher signals: the Teacher's top-k log-probabilities at every response token of a dataset.

One Teacher pass (`llava-ckd cache-teacher`) then serves any number of Student runs. A cache folder:

    manifest.json             what it was made from, written last (a folder without one is unfinished):
                              `key` = hashes of the Teacher weights, the tokenizer (tokenizer.json and
                              chat template) and the data file, the fingerprint of the images the data
                              names, and max_length; k, vocabulary size, each shard's sha256, and each
                              sample's id and number of response tokens
    shard-00000.safetensors   `samples_per_shard` samples: token_ids [T, k] int32, log_probs [T, k] and
                              tail_log_mass [T] float32, offsets [n + 1] (rows of each sample)
    started.json              while unfinished: the settings its finished shards were written with

Rows follow the samples in dataset order and, within a sample, its response positions in order
(see `positions.py`), so the Student finds a sample's signals by its dataset index.

A distill stage reading the cache first verifies every shard against its sha256 and checks its values
(ids inside the vocabulary, log-probabilities finite and at most 0, tail mass in [0, 1], offsets in
order): one read of the cache, small next to the training that follows, and it finds a shard that was
cut short, deleted or overwritten before any step uses it. Every error names the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase, ProcessorMixin

from llava_ckd.data.collator import Collator, ConversationDataset
from llava_ckd.data.conversations import images_of, load_conversations
from llava_ckd.data.samples import Sample
from llava_ckd.distill.heads import DEFAULT_CHUNK_SIZE, check_plain_head
from llava_ckd.distill.positions import response_mask
from llava_ckd.distill.sparse import SparseTeacherSignal
from llava_ckd.distill.teachers import OnlineTeacher
from llava_ckd.distill.vocab import shared_vocab_size
from llava_ckd.engines import processes
from llava_ckd.errors import UserError
from llava_ckd.fingerprint import file_sha256
from llava_ckd.storage import whole_file, write_whole

log = logging.getLogger(__name__)

SIGNALS_MANIFEST = "manifest.json"
STARTED = "started.json"
FORMAT = 2
LOG_PROB_TOLERANCE = 1e-5


class CacheError(UserError, ValueError):
    """A Teacher cache that cannot be used, or written, as asked."""


def tokenizer_sha256(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the tokenizer's tokenizer.json content and chat template: what decides the token ids."""
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    digest.update((tokenizer.chat_template or "").encode())
    return digest.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def response_token_count(sample: Sample) -> int:
    return int(response_mask(torch.tensor([sample.labels])).sum())


def cache_key(tokenizer: PreTrainedTokenizerBase, conversations: Path, images: Path | None, max_length: int) -> dict:
    """What the cached signals depend on besides the Teacher: the token ids and the images of the data."""
    return {"tokenizer": tokenizer_sha256(tokenizer), "data": file_sha256(conversations),
            "images": images_of(conversations, images), "max_length": max_length}


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / SIGNALS_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CacheError(f"{path / SIGNALS_MANIFEST}: unreadable ({error}); it was cut short or damaged: "
                         "write the cache again with `llava-ckd cache-teacher`") from None
    if not isinstance(manifest, dict):
        raise CacheError(f"{path / SIGNALS_MANIFEST}: not a Teacher cache manifest (a JSON object)")
    return manifest


def value_problem(tensors: dict[str, Tensor], vocab_size: int) -> str | None:
    """What is wrong with one shard's values, or None."""
    token_ids, log_probs, tail, offsets = (tensors.get(name) for name in
                                           ("token_ids", "log_probs", "tail_log_mass", "offsets"))
    if any(tensor is None for tensor in (token_ids, log_probs, tail, offsets)):
        return "token_ids, log_probs, tail_log_mass or offsets missing"
    if len(token_ids) and not (int(token_ids.min()) >= 0 and int(token_ids.max()) < vocab_size):
        return f"token ids outside the vocabulary 0..{vocab_size - 1}"
    if not torch.isfinite(log_probs).all() or bool((log_probs > LOG_PROB_TOLERANCE).any()):
        return "log-probabilities that are not finite or above 0"
    if bool(tail.isnan().any()) or bool((tail > LOG_PROB_TOLERANCE).any()):
        return "tail masses outside [0, 1] (tail_log_mass NaN or above 0)"
    if offsets[0] != 0 or bool((offsets.diff() < 0).any()) or offsets[-1] != len(token_ids):
        return f"offsets out of order or not ending at the {len(token_ids)} rows"
    return None


def top_k_signal(hidden: Tensor, head_weight: Tensor, vocab_size: int, k: int, chunk_size: int) -> SparseTeacherSignal:
    """The top-k signal of the head's logits at hidden [N, d], computed `chunk_size` rows at a time."""
    chunks = [SparseTeacherSignal.from_logits(hidden[start:start + chunk_size] @ head_weight[:vocab_size].T, k)
              for start in range(0, len(hidden), chunk_size)]
    return SparseTeacherSignal(*(torch.cat([getattr(chunk, field) for chunk in chunks])
                                 for field in ("token_ids", "log_probs", "tail_log_mass")))


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def _write_shard(path: Path, signals: list[SparseTeacherSignal], vocab_size: int) -> None:
    rows = torch.tensor([0] + [len(signal.token_ids) for signal in signals])
    tensors = {
        "token_ids": torch.cat([s.token_ids for s in signals]).to(torch.int32),
        "log_probs": torch.cat([s.log_probs for s in signals]).float(),
        "tail_log_mass": torch.cat([s.tail_log_mass for s in signals]).float(),
        "offsets": rows.cumsum(0),
    }
    if problem := value_problem(tensors, vocab_size):
        raise CacheError(f"{path}: the Teacher's signals hold {problem}; nothing written (a Teacher in half "
                         "precision that overflows? try --dtype fp32 or bf16)")
    with whole_file(path) as partial:
        save_file(tensors, str(partial))


def _start_folder(out: Path, settings: dict) -> None:
    """Keep the finished shards of an interrupted run with the same settings; clear anything else."""
    out.mkdir(parents=True, exist_ok=True)
    started = out / STARTED
    if started.is_file() and json.loads(started.read_text()) == settings:
        return
    for stale in [*out.glob("shard-*.safetensors"), *out.glob("shard-*.partial")]:
        stale.unlink()
    started.write_text(json.dumps(settings))


def write_teacher_cache(
    model: nn.Module,
    processor: ProcessorMixin,
    conversations: Path,
    images: Path | None,
    out: Path,
    top_k: int,
    max_length: int = 2048,
    batch_size: int = 8,
    samples_per_shard: int = 4096,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Path:
    """Run the Teacher over every sample of a LLaVA conversation file and write its top-k signals to `out`.

    A finished cache of the same Teacher, data and settings is kept as it is; `out` holding another is refused.
    An interrupted run resumes: its finished shards are kept. Launched as several processes (torchrun,
    `accelerate launch`), each process runs the Teacher on its own device over every N-th shard.
    """
    state = processes()
    conversations, out = Path(conversations), Path(out)
    tokenizer = processor.tokenizer
    key = cache_key(tokenizer, conversations, images, max_length) | {"teacher": weights_sha256(model)}
    settings = {"format": FORMAT, "key": key, "top_k": top_k, "samples_per_shard": samples_per_shard}
    if (out / SIGNALS_MANIFEST).is_file():
        existing = read_manifest(out)
        if {name: existing.get(name) for name in settings} == settings:
            log.info("Teacher cache %s is up to date", out)
            return out
        raise CacheError(f"{out} already holds a Teacher cache made from other inputs (Teacher, data, tokenizer, "
                         "max_length, top-k or samples per shard): remove it or choose another output folder")

    with state.main_process_first():
        samples, _ = load_conversations(conversations, images, processor, max_length)
    check_plain_head(model, "Teacher")
    teacher = OnlineTeacher(model.to(state.device))
    head_weight = model.get_output_embeddings().weight
    vocab_size = shared_vocab_size(len(head_weight), len(head_weight), len(tokenizer))
    if not 1 <= top_k <= vocab_size:
        raise CacheError(f"top-k must lie in 1..{vocab_size} (the vocabulary size), got {top_k}")
    if state.is_main_process:
        _start_folder(out, settings)
    state.wait_for_everyone()

    shards = range((len(samples) + samples_per_shard - 1) // samples_per_shard)
    todo = [number for number in shards[state.process_index::state.num_processes]
            if not (out / shard_name(number)).is_file()]
    collator = Collator(processor, tokenizer.pad_token_id)
    with tqdm(total=sum(len(samples[n * samples_per_shard:(n + 1) * samples_per_shard]) for n in todo),
              desc=f"caching Teacher signals of {conversations.name}", unit="sample",
              disable=not state.is_local_main_process) as bar:
        for number in todo:
            shard_samples = samples[number * samples_per_shard:(number + 1) * samples_per_shard]
            signals = []
            for batch in DataLoader(ConversationDataset(shard_samples), batch_size=batch_size, collate_fn=collator):
                outputs = teacher({name: tensor.to(state.device) for name, tensor in batch.items()})
                positions = response_mask(outputs.labels)
                with torch.no_grad():
                    signal = top_k_signal(outputs.hidden[positions], head_weight, vocab_size, top_k, chunk_size)
                start = 0
                for rows in positions.sum(1).tolist():
                    signals.append(signal[start:start + rows])
                    start += rows
                bar.update(len(positions))
            _write_shard(out / shard_name(number), signals, vocab_size)
    state.wait_for_everyone()

    if state.is_main_process:
        manifest = settings | {
            "teacher": getattr(model, "name_or_path", "") or type(model).__name__,
            "data_file": str(conversations),
            "vocab_size": vocab_size,
            "shards": [shard_name(number) for number in shards],
            "checksums": {shard_name(number): file_sha256(out / shard_name(number)) for number in shards},
            "sample_ids": [sample.sample_id for sample in samples],
            "response_tokens": [response_token_count(sample) for sample in samples],
        }
        write_whole(out / SIGNALS_MANIFEST, json.dumps(manifest))
        (out / STARTED).unlink()
    state.wait_for_everyone()
    return out


class TeacherCache:
    """Reads the signals of a cache folder by dataset index (see `loss.CachedSignals`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / SIGNALS_MANIFEST).is_file():
            raise CacheError(f"no Teacher cache in {self.path} ({SIGNALS_MANIFEST} missing): "
                             "write one with `llava-ckd cache-teacher`")
        self.manifest = read_manifest(self.path)
        if self.manifest.get("format") != FORMAT:
            raise CacheError(f"Teacher cache {self.path} has format {self.manifest.get('format')}, "
                             f"this version reads format {FORMAT}: write it again")
        self._shards: dict[int, tuple] = {}

    def check_matches(self, tokenizer: PreTrainedTokenizerBase, conversations: Path, images: Path | None,
                      max_length: int, samples: Sequence[Sample], vocab_size: int) -> None:
        """Refuse a cache made from other data, images, tokenizer or max_length, or for other samples, saying what
        differs; then verify every shard (`verify`)."""
        cached, current = self.manifest["key"], cache_key(tokenizer, Path(conversations), images, max_length)
        differences = []
        if cached["data"] != current["data"]:
            differences.append(f"data file: cached from {self.manifest['data_file']} (sha256 {cached['data'][:12]}), "
                               f"this stage reads {conversations} (sha256 {current['data'][:12]})")
        if cached["tokenizer"] != current["tokenizer"]:
            differences.append(f"tokenizer: the cache was made with another tokenizer or chat template than "
                               f"{tokenizer.name_or_path!r}")
        then, now = cached["images"], current["images"]
        if then["folder"] != now["folder"]:
            differences.append(f"images: cached from image folder {then['folder']}, this stage reads {now['folder']}")
        elif then != now:
            differences.append(f"images: the {now['images']} images the data names in {now['folder']} differ (in "
                               "name, size or modification time) from those the cache was made from")
        if cached["max_length"] != max_length:
            differences.append(f"max_length: cached with {cached['max_length']}, this stage uses {max_length}")
        if self.manifest["vocab_size"] != vocab_size:
            differences.append(f"vocabulary: cached over {self.manifest['vocab_size']} tokens, "
                               f"this stage's is {vocab_size}")
        if not differences:
            differences = self._sample_differences(samples)
        if differences:
            raise CacheError(f"Teacher cache {self.path} does not match this stage:\n  " + "\n  ".join(differences)
                             + "\nwrite the cache again with `llava-ckd cache-teacher` for this data")
        self.verify()

    def verify(self) -> None:
        """Every shard there, with its recorded sha256 and sound values; else CacheError naming the shard."""
        for name in tqdm(self.manifest["shards"], desc=f"verifying Teacher signals in {self.path.name}",
                         unit="shard", leave=False, mininterval=2.0):
            path = self.path / name
            if not path.is_file():
                raise CacheError(f"{path}: missing from the Teacher cache; write the cache again")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != self.manifest["checksums"][name]:
                raise CacheError(f"{path}: its sha256 differs from the manifest's: the shard was cut short or "
                                 "changed since it was written; write the cache again")
            try:
                problem = value_problem(load_safetensors(data), self.manifest["vocab_size"])
            except SafetensorError as error:
                problem = f"an unreadable layout ({error})"
            if problem:
                raise CacheError(f"{path}: holds {problem}; write the cache again")

    def _sample_differences(self, samples: Sequence[Sample]) -> list[str]:
        ids, counts = self.manifest["sample_ids"], self.manifest["response_tokens"]
        if [sample.sample_id for sample in samples] != ids:
            return [f"samples: the cache holds {len(ids)} samples, this stage keeps {len(samples)} or others "
                    "(another image folder can skip other records)"]
        for index, (sample, cached_count) in enumerate(zip(samples, counts, strict=True)):
            if response_token_count(sample) != cached_count:
                return [f"sample {sample.sample_id} (index {index}): {cached_count} response tokens cached, "
                        f"{response_token_count(sample)} here (truncated differently at max_length?)"]
        return []

    def _shard(self, number: int) -> tuple:
        if number not in self._shards:
            handle = safe_open(str(self.path / self.manifest["shards"][number]), framework="pt")
            self._shards[number] = handle, handle.get_tensor("offsets").tolist()
        return self._shards[number]

    def signal(self, sample_indices: Sequence[int]) -> SparseTeacherSignal:
        parts = {"token_ids": [], "log_probs": [], "tail_log_mass": []}
        for index in sample_indices:
            handle, offsets = self._shard(index // self.manifest["samples_per_shard"])
            local = index % self.manifest["samples_per_shard"]
            for name, part in parts.items():
                part.append(handle.get_slice(name)[offsets[local]:offsets[local + 1]])
        return SparseTeacherSignal(torch.cat(parts["token_ids"]).long(), torch.cat(parts["log_probs"]),
                                   torch.cat(parts["tail_log_mass"]))
