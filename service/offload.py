"""Blocking calls in worker threads, at a lower cost per call than ``anyio.to_thread``.

``anyio.to_thread.run_sync`` sets up a cancel scope and a capacity limiter on every
call; for a small instance, where a store makes several short blocking calls (index
lookups, parsing a few kilobytes of header, encoding its JSON), that overhead was a
quarter of the CPU time (py-spy, 10,000 tiny instances). :func:`call` submits to a plain
thread pool instead. A cancelled caller stops waiting but the call runs to its end, so
use it only for calls that are safe to abandon: reads and pure computation, never a
write whose completion the caller must know about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["INLINE_BYTES", "call", "call_sized"]

T = TypeVar("T")

# Enough for the concurrent lookups of many uploads; the threads mostly wait on I/O or
# for the GIL, so more would not add throughput.
#: Pure-Python work on fewer bytes than this runs on the event loop. The GIL lets only
#: one thread run Python at a time anyway, so a thread hop buys no parallelism for it,
#: and each hop costs two context switches; on 10,000 tiny instances the scheduler's
#: share of the CPU (perf) was larger than the parsing it moved off the loop.
INLINE_BYTES = 64 * 1024

_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="offload")


async def call(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn(*args)`` in a worker thread and return its result."""
    return await asyncio.wrap_future(_POOL.submit(fn, *args))


async def call_sized(size: int, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)``, pure work on ``size`` bytes: inline when small, else :func:`call`."""
    if size < INLINE_BYTES:
        return fn(*args)
    return await call(fn, *args)
