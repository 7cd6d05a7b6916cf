"""Holds the first bytes of a part until its DICOM header is parsed.

Usually a few kilobytes in memory. A header with large non-pixel values (an
encapsulated PDF, a waveform) spills to a temporary file past ``memory_limit``, so
memory stays bounded whatever the upload holds before Pixel Data.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from typing import IO, TypeVar

import anyio.to_thread

from service import offload

__all__ = ["HeaderSpool"]

T = TypeVar("T")
REPLAY_CHUNK = 1024 * 1024


class HeaderSpool:
    def __init__(self, memory_limit: int) -> None:
        self._limit = memory_limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._file: IO[bytes] | None = None

    async def write(self, data: bytes) -> None:
        if self._file is None and self._size + len(data) <= self._limit:
            self._chunks.append(data)
            self._size += len(data)
            return
        await anyio.to_thread.run_sync(self._spill_write, data)

    def _spill_write(self, data: bytes) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
            self._file.writelines(self._chunks)
            self._chunks = []
        self._file.write(data)
        self._size += len(data)

    async def parse(self, parser: Callable[[bytes | IO[bytes], int], T], header_end: int) -> T:
        """Run ``parser(source, header_end)`` on what was kept (a large header in a thread)."""
        if self._file is None:
            data = b"".join(self._chunks)
            self._chunks = [data]
            # Parses a copy: pure, so a small header is parsed in place (offload).
            return await offload.call_sized(len(data), parser, data, header_end)
        file = self._file

        def run() -> T:
            file.seek(0)
            return parser(file, header_end)

        return await anyio.to_thread.run_sync(run)

    async def replay(self) -> AsyncIterator[bytes]:
        """Yield everything written, in order, then release it."""
        try:
            if self._file is None:
                chunks, self._chunks = self._chunks, []
                for chunk in chunks:
                    yield chunk
                return
            file = self._file
            await anyio.to_thread.run_sync(file.seek, 0)
            while chunk := await anyio.to_thread.run_sync(file.read, REPLAY_CHUNK):
                yield chunk
        finally:
            await self.close()

    async def close(self) -> None:
        self._chunks = []
        file, self._file = self._file, None
        if file is not None:
            await anyio.to_thread.run_sync(file.close)
