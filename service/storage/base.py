"""The BlobStore interface: where instance files live, byte for byte.

A blob is written through a :class:`BlobWriter` and becomes visible at its key only
when :meth:`BlobWriter.commit` returns, durably and atomically; :meth:`BlobWriter.abort`
leaves no trace. So a reader never sees half a file, and a failed upload never replaces
what was there before. Implementations: ``local`` (files, the embedded default) and
``s3`` (S3 objects, multipart uploads).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from service.errors import ServiceError

__all__ = ["BlobNotFound", "BlobStore", "BlobWriter", "check_key"]

# Keys are built from validated UIDs and store names only; this guard is a second line
# of defence so that no caller can ever turn a key into a path outside the store.
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class BlobNotFound(ServiceError):
    """The index points at a blob that storage does not have."""


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key:
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobWriter(ABC):
    """One blob being written. Use exactly one of :meth:`commit` or :meth:`abort`."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Append bytes. Implementations may buffer; nothing is visible before commit."""

    @abstractmethod
    async def commit(self) -> None:
        """Make the blob visible at its key, replacing any previous blob; durable
        unless the writer was opened with ``durable=False``."""

    @abstractmethod
    async def abort(self) -> None:
        """Discard everything written. Safe to call more than once, and after a failure."""


class BlobStore(ABC):
    """Blob storage keyed by slash-separated names (no PHI: keys carry only UIDs)."""

    @abstractmethod
    async def open_writer(self, key: str, *, durable: bool = True) -> BlobWriter:
        """Start writing a blob at ``key``.

        ``durable=False`` is for what can be rebuilt (caches): the blob is still
        committed atomically, but a crash soon after may lose it or leave it damaged,
        so its reader must check what it reads. Backends whose every write is durable
        (S3) ignore it.
        """

    @abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes ``[start, end)`` of a blob. Raises :class:`BlobNotFound`."""

    async def read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``(offset, length)`` range of a blob, in order; a range
        past the end comes back short. Raises :class:`BlobNotFound`.

        For frames: backends override this to fetch all ranges in one round trip.
        """
        out = []
        for offset, length in ranges:
            out.append(b"".join([c async for c in self.read(key, offset, offset + length)]))
        return out

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove a blob; removing a missing blob is not an error."""

    @abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether a committed blob is at ``key``."""

    @abstractmethod
    async def check(self) -> None:
        """Raise :class:`service.errors.BackendUnavailable` when storage is not usable."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections and files."""
