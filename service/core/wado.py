"""WADO-RS use cases: find stored instances and their metadata, stream their bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from service.errors import NotFound
from service.index.base import Index, InstanceRef
from service.storage.base import BlobStore

__all__ = ["WadoService"]


def _describe(study: str, series: str | None, sop: str | None) -> str:
    if sop is not None:
        return f"instance {sop} of series {series} in study {study}"
    if series is not None:
        return f"series {series} in study {study}"
    return f"study {study}"


class WadoService:
    def __init__(self, storage: BlobStore, index: Index, *, store: str) -> None:
        self.storage = storage
        self.index = index
        self.store = store

    async def instances(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[InstanceRef]:
        """The stored instances of a study, series or instance; 404 when there are none."""
        found = await self.index.instances(self.store, study, series, sop)
        if not found:
            raise NotFound(f"{_describe(study, series, sop)} is not stored here")
        return found

    async def metadata(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[tuple[InstanceRef, bytes]]:
        """Each instance's stored DICOM JSON; 404 when there are none."""
        found = await self.index.metadata(self.store, study, series, sop)
        if not found:
            raise NotFound(f"{_describe(study, series, sop)} is not stored here")
        return found

    def content(self, ref: InstanceRef) -> AsyncIterator[bytes]:
        """The instance's Part 10 bytes, exactly as stored."""
        return self.storage.read(ref.blob_key)
