"""A conversation file's checked samples, kept on disk as one Arrow file (ids as int32) and read memory-mapped.

Every process of a stage, and the Teacher's encoding beside the Student's, maps the same file: the operating system
holds its pages once, and a `Sample` is built only when it is asked for. The file is written batch by batch while
the samples are checked, so no process ever holds all of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import pyarrow as pa

from llava_ckd.storage import whole_file

SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("input_ids", pa.list_(pa.int32())),
    ("labels", pa.list_(pa.int32())),
    ("images", pa.list_(pa.string())),
    ("image_tokens", pa.list_(pa.int32())),
    ("record", pa.int64()),
    ("truncated", pa.bool_()),
])
ROWS_PER_BATCH = 1024


@dataclass
class Sample:
    sample_id: str
    input_ids: list[int]
    labels: list[int]
    images: list[Path]
    image_tokens: list[int] = field(default_factory=list)
    """How many image tokens each image expands into (the processor's own count for that image)."""
    record: int = 0
    """Position of the record in its conversation file."""
    truncated: bool = False
    index: int | None = None
    """Position in its `ConversationDataset`, set by the dataset."""

    def row(self) -> dict:
        return {"sample_id": self.sample_id, "input_ids": self.input_ids, "labels": self.labels,
                "images": [str(image) for image in self.images], "image_tokens": self.image_tokens,
                "record": self.record, "truncated": self.truncated}

    @classmethod
    def of_row(cls, row: dict) -> Sample:
        return cls(row["sample_id"], row["input_ids"], row["labels"], [Path(image) for image in row["images"]],
                   row["image_tokens"], row["record"], row["truncated"])


def write_samples(path: Path, samples: Iterable[Sample]) -> None:
    """Write `samples` to `path` whole (processes checking the same file at once each stage their own copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = (sample.row() for sample in samples)
    with (whole_file(path, suffix=f".{os.getpid()}.partial") as partial, pa.OSFile(str(partial), "wb") as sink,
          pa.ipc.new_file(sink, SCHEMA) as writer):
        while batch := list(islice(rows, ROWS_PER_BATCH)):
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=SCHEMA))


class SampleStore(Sequence):
    """The samples of one Arrow file, memory-mapped: indexing builds one `Sample`, a slice a list of them."""

    def __init__(self, path: Path):
        self.path = path
        self.table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[position] for position in range(start, stop, step)]
            return [Sample.of_row(row) for row in self.table.slice(start, stop - start).to_pylist()]
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        return Sample.of_row(self.table.slice(index % len(self), 1).to_pylist()[0])

    def __iter__(self) -> Iterator[Sample]:
        for batch in self.table.to_batches(max_chunksize=ROWS_PER_BATCH):
            yield from map(Sample.of_row, batch.to_pylist())

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same samples (another store, or a list)."""
        return (isinstance(other, Sequence) and len(self) == len(other)
                and all(ours == theirs for ours, theirs in zip(self, other, strict=True)))

    __hash__ = None
