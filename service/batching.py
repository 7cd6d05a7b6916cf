"""The one batching step the group-commit threads share (index writes, blob commits)."""

from __future__ import annotations

import queue
from typing import TypeVar

__all__ = ["take_batch"]

T = TypeVar("T")


def take_batch(jobs: queue.SimpleQueue[T | None], first: T, limit: int) -> tuple[list[T], bool]:
    """``first`` and whatever else is queued, up to ``limit`` jobs, without waiting;
    and whether the stop marker (None) was met, after which the caller stops."""
    batch = [first]
    while len(batch) < limit:
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            break
        if job is None:
            return batch, True
        batch.append(job)
    return batch, False
