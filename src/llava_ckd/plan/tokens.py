"""Tokens per epoch of a conversation file, as a stage encodes it (the model's tokenizer, chat template and image
tokens, `data/conversations.py`), without opening the images; or assumed from the user's numbers.

Counted once per file, tokenizer and settings, in the sample cache's folder (`tokens/`). `sample` counts a random
subset of the records and scales up, with the 95% half-width of the estimate.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from llava_ckd.data.conversations import (
    IGNORE_INDEX,
    ConversationEncoder,
    SkipSample,
    image_names,
    read_records,
    sample_cache,
)
from llava_ckd.models.tokenizer import IMAGE_TOKEN


@dataclass(frozen=True)
class Tokens:
    """One epoch of a stage's data: samples and their tokens (image tokens included)."""

    samples: float
    tokens: float
    response: float
    """Tokens with a label (the positions the loss heads run on)."""
    images: float
    squares: float
    """Sum over samples of length²: attention's cost grows with it."""
    longest: int
    source: str
    """counted, estimated (with its error) or assumed."""

    @property
    def mean(self) -> float:
        return self.tokens / self.samples if self.samples else 0.0

    def scaled(self, samples: float) -> Tokens:
        """The same mix of samples, `samples` of them (max_steps, epochs)."""
        f = samples / self.samples if self.samples else 0.0
        return Tokens(samples, self.tokens * f, self.response * f, self.images * f, self.squares * f, self.longest,
                      self.source)


def assumed(samples: int, text_tokens: int, response_tokens: int, images: int, image_tokens: int) -> Tokens:
    """`samples` samples of `text_tokens` text tokens and `images` images each (`image_tokens` tokens per image),
    `response_tokens` of them labelled."""
    length = text_tokens + images * image_tokens
    return Tokens(samples, samples * length, samples * response_tokens, samples * images, samples * length ** 2,
                  length, f"assumed: {samples:,} samples × ({text_tokens:,} text + {images} × {image_tokens} "
                          "image tokens)")


class TokenCounter(ConversationEncoder):
    """Encodes records as training does under the tokenizer's chat template, each image as `image_tokens` image
    tokens: no image is opened, which is exact for fixed-resolution models (LLaVA, TinyLLaVA)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_tokens: int, max_length: int):
        self.tokenizer, self.template, self.max_length = tokenizer, tokenizer.chat_template, max_length
        self.image_token, self.image_token_id = IMAGE_TOKEN, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.image_folder, self.image_tokens = None, image_tokens
        self.start_memos()

    def images(self, record: dict) -> list[Path]:
        return [Path(name) for name in image_names(record)]

    def expansion(self, path: Path) -> str:
        return IMAGE_TOKEN * self.image_tokens

    def settings(self) -> str:
        return f"{self.image_tokens} image tokens"


def count_tokens(path: Path, tokenizer: PreTrainedTokenizerBase, image_tokens: int, max_length: int,
                 sample: int | None = None) -> Tokens:
    """Tokens of one epoch over `path` (records that training would skip for their text are left out)."""
    counter = TokenCounter(tokenizer, image_tokens, max_length)
    cache = sample_cache(path, counter, kind="tokens", extra=(sample,))
    if cache.is_file():
        return Tokens(**json.loads(cache.read_text()))
    records = [record for _, record in read_records(path)]
    chosen = records if sample is None or sample >= len(records) else random.Random(0).sample(records, sample)
    lengths, response, images = [], 0, 0
    for record in chosen:
        try:
            encoded = counter.encode(record)
        except SkipSample:
            lengths.append(0)
            continue
        lengths.append(len(encoded.input_ids))
        response += sum(label != IGNORE_INDEX for label in encoded.labels)
        images += len(encoded.images)
    kept = sum(length > 0 for length in lengths)
    scale = len(records) / len(chosen)
    source = "counted"
    if scale > 1:
        mean = sum(lengths) / len(lengths)
        spread = math.sqrt(sum((length - mean) ** 2 for length in lengths) / (len(lengths) - 1))
        half_width = 1.96 * spread / math.sqrt(len(lengths)) * math.sqrt(1 - len(lengths) / len(records))
        source = f"estimated from {len(chosen):,} of {len(records):,} records, ±{100 * half_width / mean:.1f}% (95%)"
    tokens = Tokens(kept * scale, sum(lengths) * scale, response * scale, images * scale,
                    sum(length ** 2 for length in lengths) * scale, max(lengths, default=0), source)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(asdict(tokens)))
    return tokens
