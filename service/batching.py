"""What the group-commit threads share (index writes, blob commits): taking a batch
off the queue, and answering its callers.

Answers go back to each caller's event loop in one call per batch, not one per job:
each call wakes the loop through its self-pipe, and a ``concurrent.futures.Future``
per job added a lock, a condition and two callbacks. A caller that stopped waiting
(cancelled) has its answer dropped; the thread carries on. (Answering a cancelled
``concurrent.futures.Future`` raises, and once killed the index's writer thread.)
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from typing import Any, TypeVar

__all__ = ["Answer", "answer", "take_batch"]

T = TypeVar("T")

#: (the caller's future, whether its job succeeded, the result or the exception)
Answer = tuple["asyncio.Future[Any]", bool, Any]


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


def answer(answers: list[Answer]) -> None:
    """From a worker thread: hand each answer to its caller's loop, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
    for item in answers:
        by_loop.setdefault(item[0].get_loop(), []).append(item)
    for loop, some in by_loop.items():
        # A loop that has closed raises RuntimeError: nobody is waiting there any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, some)


def _settle(answers: list[Answer]) -> None:
    """On the caller's loop: answer every caller still waiting (not cancelled)."""
    for future, ok, value in answers:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
