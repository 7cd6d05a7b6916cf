"""A bounded channel from one producer task to one consumer task, on plain asyncio.

STOW hands every chunk of a part from the task reading the request body to the part's
own task. anyio's memory object streams did this with a checkpoint on every send and
receive, each asking sniffio which event loop is running; py-spy put that machinery at
about 5% of the GIL-holding time of a 512 KB upload. Here a send or receive that need
not wait costs a deque operation.

Only one side can ever be waiting (the producer when the channel is full, the consumer
when it is empty), so one future is enough.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Channel", "ChannelClosed"]

T = TypeVar("T")


class ChannelClosed(Exception):
    """Sent to a channel that has been closed."""


class Channel(Generic[T]):
    """At most ``limit`` items in transit; :meth:`receive` returns None once the channel
    is closed and drained."""

    __slots__ = ("_closed", "_items", "_limit", "_waiter")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a channel holds at least one item")
        self._items: deque[T] = deque()
        self._limit = limit
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    async def send(self, item: T) -> None:
        """Queue ``item``, first waiting while the channel is full."""
        while len(self._items) >= self._limit and not self._closed:
            await self._wait()
        if self._closed:
            raise ChannelClosed("send on a closed channel")
        self._items.append(item)
        self._wake()

    async def receive(self) -> T | None:
        """The next item, waiting for one; None when closed and nothing is left."""
        while not self._items:
            if self._closed:
                return None
            await self._wait()
        item = self._items.popleft()
        self._wake()
        return item

    def close(self) -> None:
        """No more items: the consumer gets what is queued, then None."""
        self._closed = True
        self._wake()

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
