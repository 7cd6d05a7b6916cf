"""WADO-RS use cases: find stored instances and their metadata, stream their bytes,
transcode the ones stored in a syntax the client does not accept."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.to_thread

from service.dicom.frames import read_layout
from service.errors import NotAcceptable, NotFound
from service.imaging.transcode import transcode
from service.index.base import Index, InstanceRef
from service.storage.base import BlobStore

__all__ = ["WadoService"]


class WadoService:
    def __init__(
        self,
        storage: BlobStore,
        index: Index,
        *,
        store: str,
        transcode_max_bytes: int = 512 * 1024**2,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.storage = storage
        self.index = index
        self.store = store
        self.transcode_max_bytes = transcode_max_bytes
        self.limiter = limiter or anyio.CapacityLimiter(2)

    async def instances(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[InstanceRef]:
        """The stored instances of a study, series or instance; 404 when there are none."""
        found = await self.index.instances(self.store, study, series, sop)
        if not found:
            raise NotFound.unstored(study, series, sop)
        return found

    async def metadata(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[tuple[InstanceRef, bytes]]:
        """Each instance's stored DICOM JSON; 404 when there are none."""
        found = await self.index.metadata(self.store, study, series, sop)
        if not found:
            raise NotFound.unstored(study, series, sop)
        return found

    def content(self, ref: InstanceRef) -> AsyncIterator[bytes]:
        """The instance's Part 10 bytes, exactly as stored."""
        return self.storage.read(ref.blob_key)

    async def check_transcodable(
        self, study: str, series: str | None, sop: str | None, refs: list[InstanceRef]
    ) -> None:
        """Refuse (406) before anything is sent when one of ``refs`` is too large to
        transcode: stored size, or decoded pixel size from its frame table."""
        if not refs:
            return
        limit = self.transcode_max_bytes
        sizes = {ref.sop_uid: ref.size for ref in refs}
        for ref, document in await self.index.layouts(self.store, study, series, sop):
            layout = read_layout(document) if ref.sop_uid in sizes else None
            if layout is not None and layout.frames is not None:
                decoded = layout.frames.count * layout.frames.frame_bytes
                sizes[ref.sop_uid] = max(sizes[ref.sop_uid], decoded)
        for uid, size in sizes.items():
            if size > limit:
                raise NotAcceptable(
                    f"instance {uid} needs {size // 2**20} MB to transcode, over the limit "
                    f"of {limit // 2**20} MB (DICOMWEB_TRANSCODE_MAX_BYTES); ask with "
                    "transfer-syntax=* to receive it as stored"
                )

    async def transcoded(self, ref: InstanceRef, target: str) -> bytes:
        """The instance's Part 10 bytes re-encoded in ``target`` (one at a time per
        worker slot, in a thread)."""
        data = b"".join([chunk async for chunk in self.storage.read(ref.blob_key)])
        limit = self.transcode_max_bytes
        return await anyio.to_thread.run_sync(
            lambda: transcode(data, target, max_bytes=limit), limiter=self.limiter
        )
