"""The running service's parts, built from :class:`Settings` and shared by handlers."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from service.config import Settings
from service.core.liveness import ProcessLocks
from service.core.qido import QidoService
from service.core.stow import PROCESS_TOKEN, StowService
from service.core.wado import WadoService
from service.index.base import Index
from service.index.sqlite import SqliteIndex
from service.storage.base import BlobStore
from service.storage.local import LocalBlobStore

__all__ = ["Services", "open_services"]


class Services(msgspec.Struct, kw_only=True):
    settings: Settings
    storage: BlobStore
    index: Index
    stow: StowService
    wado: WadoService
    qido: QidoService
    #: This process's liveness lock beside an embedded index (None for shared backends).
    locks: ProcessLocks | None = None

    async def close(self) -> None:
        await self.index.close()
        await self.storage.close()
        if self.locks is not None:
            self.locks.close()


async def _open_storage(url: str) -> BlobStore:
    if url.startswith("file://"):
        store = LocalBlobStore.from_url(url)
        await store.open()
        return store
    raise ValueError(f"unsupported storage URL {url!r} (supported: file://)")


async def _open_index(url: str) -> Index:
    if url.startswith("sqlite:///"):
        index = SqliteIndex.from_url(url)
        await index.open()
        return index
    raise ValueError(f"unsupported index URL {url!r} (supported: sqlite:///)")


async def open_services(settings: Settings) -> Services:
    """Open storage and index, recover from any crash, and wire the use cases."""
    storage = await _open_storage(settings.storage_url)
    index = await _open_index(settings.index_url)
    stow = StowService(
        storage,
        index,
        store=settings.store,
        max_request_bytes=settings.max_request_bytes,
        header_memory_bytes=settings.header_memory_bytes,
        duplicates=settings.duplicates,
    )
    # Processes sharing the embedded index (the HTTP service, the DIMSE sidecar) each
    # hold a lock beside it while they run: a claim left at start-up is cleared only
    # when the process that took it is gone (service.core.liveness).
    locks = None
    if isinstance(index, SqliteIndex):
        locks = ProcessLocks(Path(str(index.path) + ".live"))
        locks.hold(PROCESS_TOKEN)
        await stow.recover(older_than=time.time(), alive=locks.alive)
    wado = WadoService(storage, index, store=settings.store)
    qido = QidoService(index, store=settings.store)
    return Services(
        settings=settings,
        storage=storage,
        index=index,
        stow=stow,
        wado=wado,
        qido=qido,
        locks=locks,
    )
