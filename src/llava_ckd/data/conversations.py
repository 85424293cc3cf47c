"""LLaVA conversation JSON -> input ids, labels on the assistant turns only, and image files.

A record is `{"id", "image"?, "conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}`
(`image` is a file name relative to the image folder, or a list of them; text-only records have none).
Every record is checked before training starts. A malformed file stops the run with its line and
column; a bad record is skipped, counted by reason, and reported with its id, so that a run never
dies on sample 9,000 after an hour of work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

from PIL import Image
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase, ProcessorMixin

from llava_ckd.data.images import ImageCheck, check_image, check_images
from llava_ckd.data.samples import Sample, SampleStore, write_samples
from llava_ckd.files import DataError, json_lines, read_json
from llava_ckd.fingerprint import file_sha256, images_fingerprint
from llava_ckd.models.processors import processor_image_token_id
from llava_ckd.models.tokenizer import IMAGE_TOKEN
from llava_ckd.storage import write_whole

log = logging.getLogger(__name__)

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
IGNORE_INDEX = -100
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."   # LLaVA-1.5's short-answer prompt


class SkipSample(Exception):
    """One record that cannot be used: a short reason (the count key) and the detail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class SkipReport:
    source: Path
    kept: int = 0
    truncated: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(detail)

    def summary(self) -> str:
        lines = [f"{self.source}: {self.kept} samples kept ({self.truncated} truncated), "
                 f"{sum(self.skipped.values())} skipped"]
        for reason, count in self.skipped.most_common():
            lines.append(f"  {count} x {reason}, e.g. {self.examples[reason][0]}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"source": str(self.source), "kept": self.kept, "truncated": self.truncated,
                "skipped": dict(self.skipped), "examples": self.examples}

    @classmethod
    def of_dict(cls, saved: dict) -> SkipReport:
        return cls(Path(saved["source"]), saved["kept"], saved["truncated"], Counter(saved["skipped"]),
                   saved["examples"])


def read_records(path: Path) -> list[tuple[str, object]]:
    """(location, record) pairs from a .json list or a .jsonl file; malformed JSON or text raises DataError."""
    if path.suffix == ".jsonl":
        return [(f"{path}:{number}", record) for number, record in json_lines(path, "conversation file")]
    data = read_json(path, "conversation file")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of conversation records, got {type(data).__name__}")
    return [(f"{path}[{index}]", record) for index, record in enumerate(data)]


def chat_template(processor: ProcessorMixin) -> str:
    template = processor.chat_template or processor.tokenizer.chat_template
    if not isinstance(template, str):
        raise DataError(f"processor of {processor.tokenizer.name_or_path!r} has no chat template")
    return template


def render_with_answer_spans(tokenizer: PreTrainedTokenizerBase, template: str, messages: list[dict]
                             ) -> tuple[str, list[tuple]]:
    """The chat-template text of `messages` and the character spans of the assistant replies in it."""
    def render(prefix: list[dict], add_generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(prefix, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)

    text = render(messages)
    spans = []
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:turn], add_generation_prompt=True)
        with_reply = render(messages[: turn + 1])
        if not text.startswith(prompt) or not text.startswith(with_reply):
            raise DataError(f"the chat template of {tokenizer.name_or_path!r} does not render "
                            "conversations prefix by prefix, so assistant turns cannot be located")
        spans.append((len(prompt), len(with_reply.rstrip())))
    return text, spans


IMAGE_LINE = re.compile(re.escape(IMAGE_TOKEN) + r"\n?")
"""LLaVA data marks an image with `<image>`, usually on a line of its own."""


def content_parts(text: str) -> list[dict]:
    """A LLaVA turn's text as chat-template content: image parts where it has `<image>`, text parts between."""
    parts = []
    for index, piece in enumerate(IMAGE_LINE.split(text)):
        if index:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def image_expansion(processor: ProcessorMixin, image: Image.Image) -> str:
    """The text the processor puts in place of one image's placeholder: its image tokens, with the family's
    start/end, tile and newline tokens, as many as this image needs."""
    encoded = processor(text=[processor.image_token], images=[image], return_text_replacement_offsets=True)
    (replacement,) = encoded["text_replacement_offsets"][0]
    return replacement["replacement"]


def expand_images(image_token: str, text: str, spans: list[tuple], expansions: list[str]
                  ) -> tuple[str, list[tuple]]:
    """`text` with the k-th `image_token` placeholder the chat template wrote replaced by `expansions[k]`, and the
    answer spans moved with it."""
    placeholders = list(re.finditer(re.escape(image_token), text))
    if len(placeholders) != len(expansions):
        raise SkipSample("image placeholders and images differ in number",
                         f"the chat template wrote {len(placeholders)} {image_token} for {len(expansions)} "
                         "image(s)")
    pieces, shifts, last, shift = [], [], 0, 0
    for match, expansion in zip(placeholders, expansions, strict=True):
        if any(start <= match.start() < end for start, end in spans):
            raise SkipSample("image in an assistant turn")
        pieces += [text[last:match.start()], expansion]
        shift += len(expansion) - len(match.group())
        shifts.append((match.end(), shift))
        last = match.end()
    pieces.append(text[last:])

    def moved(position: int) -> int:
        return position + max((by for end, by in shifts if end <= position), default=0)

    return "".join(pieces), [(moved(start), moved(end)) for start, end in spans]


def image_names(record: dict) -> list[str]:
    """The image file names of one record (`image`: a name, a list of names, or absent)."""
    names = record.get("image")
    names = [] if names is None else [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SkipSample("'image' must be a file name or a list of file names")
    return names


def names_or_none(record: object) -> list[str]:
    """The image names of a record, none where it is not a record or its `image` is malformed."""
    try:
        return image_names(record) if isinstance(record, dict) else []
    except SkipSample:
        return []


@cache
def _named_images(path: Path, sha256: str) -> tuple[str, ...]:
    """The image names `path` holds, parsed once per file content and kept beside the sample caches."""
    kept = image_names_file(path, sha256)
    if not kept.is_file():
        keep_image_names(path, sha256, read_records(path))
    return tuple(json.loads(kept.read_text()))


def image_names_file(path: Path, sha256: str) -> Path:
    return cache_root() / "image-names" / f"{path.stem}-{sha256[:24]}.json"


def keep_image_names(path: Path, sha256: str, records: list[tuple[str, object]]) -> None:
    kept = image_names_file(path, sha256)
    kept.parent.mkdir(parents=True, exist_ok=True)
    names = sorted({name for _, record in records for name in names_or_none(record)})
    write_whole(kept, json.dumps(names), suffix=f".{os.getpid()}.partial")


def cache_root() -> Path:
    return Path(os.environ.get("LLAVA_CKD_CACHE", Path.home() / ".cache" / "llava_ckd"))


def images_of(conversations: Path, image_folder: Path | None) -> dict:
    """The fingerprint of the images a conversation file names, in `image_folder` (name, size, mtime of each); without
    a folder there are no images to fingerprint (the names are part of the file, hashed on their own)."""
    if image_folder is None:
        return {"folder": None}
    conversations = Path(conversations)
    return images_fingerprint(_named_images(conversations.resolve(), file_sha256(conversations)), image_folder)


class ConversationEncoder:
    """Turns one LLaVA record into a `Sample` under the processor's chat template and image expansion, or raises
    `SkipSample` saying why it cannot."""

    def __init__(self, processor: ProcessorMixin, image_folder: Path | None, max_length: int):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.template = chat_template(processor)
        self.image_token = processor.image_token
        self.image_token_id = processor_image_token_id(processor)
        self.image_folder = image_folder
        self.max_length = max_length
        self.start_memos()

    def start_memos(self) -> None:
        """What one encoder learns once and reuses: image sizes, expansions and their ids, whether ids splice."""
        self._images: dict[Path, ImageCheck] = {}
        self._expansions: dict[tuple[int, int], str] = {}
        self._expansion_ids: dict[str, list[int]] = {}
        self._splices: bool | None = None

    def messages(self, record: dict, n_images: int) -> list[dict]:
        turns = record.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise SkipSample("no conversations list")
        messages = []
        for turn in turns:
            if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
                raise SkipSample("malformed turn (needs 'from' in human/gpt/system and a string 'value')")
            messages.append({"role": ROLES[turn["from"]], "content": turn["value"]})
        if not any(m["role"] == "assistant" for m in messages):
            raise SkipSample("no assistant (gpt) turn")
        placeholders = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
        if placeholders > n_images:
            raise SkipSample(f"more {IMAGE_TOKEN} placeholders than images",
                             f"{placeholders} placeholders, {n_images} image(s)")
        if placeholders < n_images:  # LLaVA convention: the image goes before the first question
            first_user = next(m for m in messages if m["role"] == "user")
            first_user["content"] = (IMAGE_TOKEN + "\n") * (n_images - placeholders) + first_user["content"]
        return [{"role": m["role"], "content": content_parts(m["content"])} for m in messages]

    def images(self, record: dict) -> list[Path]:
        names = image_names(record)
        if names and self.image_folder is None:
            raise SkipSample("record has an image but no image folder was given")
        paths = [self.image_folder / name for name in names]
        for path in paths:
            self.image_size(path)
        return paths

    def image_size(self, path: Path) -> tuple[int, int]:
        """The size of a readable image, decoded in full once per encoder; a missing or unreadable one raises
        SkipSample, each time it is named."""
        if path not in self._images:
            self._images[path] = check_image(path)
        check = self._images[path]
        if check.size is None:
            raise SkipSample(check.problem, check.detail)
        return check.size

    def know_images(self, checks: dict[Path, ImageCheck]) -> None:
        """Checks made beforehand (`check_images`, on several threads)."""
        self._images.update(checks)

    def expansion(self, path: Path) -> str:
        """The image's expansion: the processor's, computed once per image size (it depends on the size only)."""
        size = self.image_size(path)
        if size not in self._expansions:
            self._expansions[size] = image_expansion(self.processor, Image.new("RGB", size))
        return self._expansions[size]

    def settings(self) -> str:
        """The processor's settings, which decide how images expand (a key of the sample cache)."""
        return self.processor.to_json_string()

    def expansion_ids(self, expansion: str) -> list[int]:
        if expansion not in self._expansion_ids:
            self._expansion_ids[expansion] = self.tokenizer(expansion, add_special_tokens=False)["input_ids"]
        return self._expansion_ids[expansion]

    def image_token_counts(self, expansions: list[str]) -> list[int]:
        return [self.expansion_ids(expansion).count(self.image_token_id) for expansion in expansions]

    def tokens_and_labels(self, text: str, spans: list[tuple], expansions: list[str]) -> tuple[list[int], list[int]]:
        """The ids and labels of `text` with its image placeholders expanded. Where the placeholder and every
        expansion are bounded by added tokens (which the tokenizer splits the text at), the text is tokenized with
        one placeholder per image and each expansion's ids are spliced in: the ids come out the same (the first
        such sample checks it against the whole text's tokenization) for a fraction of the work."""
        expanded, moved = expand_images(self.image_token, text, spans, expansions)
        if not expansions or self._splices is False or not all(map(self.bounded_by_added_tokens, expansions)):
            return tokens_and_labels(self.tokenizer, expanded, moved)
        ids, labels = tokens_and_labels(self.tokenizer, text, spans)
        placeholders = [index for index, token in enumerate(ids) if token == self.image_token_id]
        if len(placeholders) != len(expansions):
            return tokens_and_labels(self.tokenizer, expanded, moved)
        for index, expansion in zip(reversed(placeholders), reversed(expansions), strict=True):
            expansion_ids = self.expansion_ids(expansion)
            ids[index:index + 1] = expansion_ids
            labels[index:index + 1] = [IGNORE_INDEX] * len(expansion_ids)
        if self._splices is None:
            self._splices = (ids, labels) == tokens_and_labels(self.tokenizer, expanded, moved)
            if not self._splices:
                log.info("%s: spliced image ids differ from the whole text's; tokenizing whole texts",
                         self.tokenizer.name_or_path)
                return tokens_and_labels(self.tokenizer, expanded, moved)
        return ids, labels

    @cached_property
    def added_tokens(self) -> frozenset[str]:
        return frozenset(self.tokenizer.get_added_vocab())

    def bounded_by_added_tokens(self, expansion: str) -> bool:
        added = self.added_tokens
        return (self.image_token in added and any(expansion.startswith(token) for token in added)
                and any(expansion.endswith(token) for token in added))

    def prompt(self, user_text: str, images: list[Image.Image]) -> str:
        """The generation prompt for one user message, its images expanded as in training."""
        messages = [{"role": "user", "content": content_parts(user_text)}]
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.template,
                                                  tokenize=False, add_generation_prompt=True)
        return expand_images(self.image_token, text, [], [image_expansion(self.processor, image)
                                                          for image in images])[0]

    def encode(self, record: object, position: int = 0) -> Sample:
        if not isinstance(record, dict):
            raise SkipSample("record is not a JSON object")
        sample_id = str(record.get("id", "?"))
        paths = self.images(record)
        text, spans = render_with_answer_spans(self.tokenizer, self.template,
                                               self.messages(record, len(paths)))
        expansions = [self.expansion(path) for path in paths]
        input_ids, labels = self.tokens_and_labels(text, spans, expansions)
        image_tokens = self.image_token_counts(expansions)
        if sum(image_tokens) != input_ids.count(self.image_token_id):
            raise SkipSample("image tokens merge with the text around them",
                             f"{sum(image_tokens)} image tokens expanded, {input_ids.count(self.image_token_id)} "
                             "in the tokenized conversation")
        truncated = len(input_ids) > self.max_length
        if truncated:
            if input_ids[: self.max_length].count(self.image_token_id) != input_ids.count(self.image_token_id):
                raise SkipSample("too long: truncation would cut an image", f"max_length {self.max_length}")
            input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
            if all(label == IGNORE_INDEX for label in labels):
                raise SkipSample("too long: no answer token before max_length", f"max_length {self.max_length}")
        return Sample(sample_id, input_ids, labels, paths, image_tokens, position, truncated)


def tokens_and_labels(tokenizer: PreTrainedTokenizerBase, text: str, spans: list[tuple]) -> tuple[list[int], list[int]]:
    """The token ids of `text`, and labels that keep the tokens starting inside `spans` (the rest -100)."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [start for start, _ in spans]  # sorted and disjoint: the span a token may start in is the last before it
    labels = []
    for token, (offset, _) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True):
        span = bisect_right(starts, offset) - 1
        labels.append(token if span >= 0 and offset < spans[span][1] else IGNORE_INDEX)
    return encoding["input_ids"], labels


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def load_conversations(
    path: Path, image_folder: Path | None, processor: ProcessorMixin, max_length: int
) -> tuple[SampleStore, SkipReport]:
    """Every usable sample of a LLaVA conversation file, and a report of those skipped and why.

    The samples are kept on disk (see `sample_cache`) and read memory-mapped, so the stages of a cascade check a
    file only once and no process holds all its samples.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    encoder = ConversationEncoder(processor, Path(image_folder).resolve() if image_folder else None, max_length)
    records = None
    if encoder.image_folder is not None and not image_names_file(path.resolve(), file_sha256(path)).is_file():
        records = read_records(path)  # parsed once for the image names and, on a cache miss, for the samples
        keep_image_names(path.resolve(), file_sha256(path), records)
    cache = sample_cache(path, encoder, suffix=".arrow")
    report_file = cache.with_suffix(".report.json")
    if cache.is_file() and report_file.is_file():
        report = SkipReport.of_dict(json.loads(report_file.read_text()))
    else:
        report = SkipReport(path)
        write_samples(cache, encode_all(path, encoder, report, records))
        write_whole(report_file, json.dumps(report.to_dict()), suffix=f".{os.getpid()}.partial")
    if report.skipped or report.truncated:
        log.warning(report.summary())
    if not report.kept:
        raise DataError(f"{path}: no usable sample\n{report.summary()}")
    return SampleStore(cache), report


def encode_all(path: Path, encoder: ConversationEncoder, report: SkipReport,
               records: list[tuple[str, object]] | None = None) -> Iterator[Sample]:
    """The usable samples of `path` (its `records`, when already parsed), one by one as they are checked; `report`
    counts those kept and skipped."""
    records = read_records(path) if records is None else records
    folder = encoder.image_folder
    if folder is not None and not folder.is_dir() and any(isinstance(r, dict) and r.get("image") for _, r in records):
        raise DataError(f"image folder not found: {folder} (the images of {path})")
    if folder is not None:
        encoder.know_images(check_images(sorted({folder / name for _, record in records
                                                 for name in names_or_none(record)})))
    for position, (location, record) in enumerate(tqdm(records, desc=f"checking {path.name}", unit="sample",
                                                       mininterval=2.0, leave=False)):
        try:
            sample = encoder.encode(record, position)
        except SkipSample as reason:
            sample_id = record.get("id", "?") if isinstance(record, dict) else "?"
            report.skip(reason.reason, f"sample {sample_id} ({location}): {reason}")
            continue
        report.kept += 1
        report.truncated += sample.truncated
        yield sample


CACHE_FORMAT = 3


def sample_cache(path: Path, encoder: ConversationEncoder, kind: str = "samples", extra: tuple = (),
                 suffix: str = ".json") -> Path:
    """Where the checked samples of `path` are kept (or, for another `kind`, what else is derived from them): keyed
    by the file's bytes, the tokenizer, the settings, the name, size and mtime of every image the file names (so
    that an image changed since is checked again) and `extra`."""
    key = hashlib.sha256()
    key.update(file_sha256(path).encode())
    key.update(encoder.tokenizer.backend_tokenizer.to_str().encode())
    settings = [CACHE_FORMAT, encoder.template, encoder.settings(), encoder.max_length,
                images_of(path, encoder.image_folder), *extra]
    key.update(json.dumps(settings).encode())
    return cache_root() / kind / f"{path.stem}-{key.hexdigest()[:24]}{suffix}"


def conversation_corpus(paths: list[Path]) -> list[str]:
    """Every turn's text in LLaVA conversation files, plus the chat roles: a corpus to train a tokenizer on."""
    texts = ["user assistant system"]
    for path in paths:
        for _, record in read_records(Path(path)):
            turns = record.get("conversations", []) if isinstance(record, dict) else []
            texts.extend(turn["value"] for turn in turns
                         if isinstance(turn, dict) and isinstance(turn.get("value"), str))
    return texts
