"""One stage at a time per stage folder, across processes: cascades that share a store run side by side."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from llava_ckd.cascade.expand import Node


@contextmanager
def stage_lock(node: Node, holder: bool) -> Iterator[None]:
    """Held by the main process while a stage is checked and run, so that cascades sharing a store (`store:`)
    run side by side: a second one waits for the stage and then finds it finished."""
    if not holder:
        yield
        return
    node.directory.parent.mkdir(parents=True, exist_ok=True)
    with (node.directory.parent / f".{node.directory.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
