"""The running service's parts, built from :class:`Settings` and shared by handlers."""

from __future__ import annotations

import logging
import time

import msgspec

from service.config import Settings
from service.core.qido import QidoService
from service.core.stow import StowService
from service.core.wado import WadoService
from service.errors import BackendUnavailable
from service.index.base import Index
from service.index.sqlite import SqliteIndex
from service.storage.base import BlobStore
from service.storage.local import LocalBlobStore

__all__ = ["Services", "open_services"]

log = logging.getLogger("service")


class Services(msgspec.Struct, kw_only=True):
    settings: Settings
    storage: BlobStore
    index: Index
    stow: StowService
    wado: WadoService
    qido: QidoService

    async def close(self) -> None:
        await self.index.close()
        await self.storage.close()


async def _open_storage(url: str) -> BlobStore:
    if url.startswith("file://"):
        store = LocalBlobStore.from_url(url)
        await store.open()
        return store
    raise ValueError(f"unsupported storage URL {url!r} (supported: file://)")


async def _open_index(settings: Settings, storage: BlobStore) -> Index:
    url = settings.index_url
    if url.startswith("sqlite:///"):
        index = SqliteIndex.from_url(url)
        await index.open()
        return index
    if url.startswith("dynamodb://"):
        # boto3 is imported only when DynamoDB is chosen.
        from service.index.dynamodb import DynamoDBIndex

        dynamodb = DynamoDBIndex.from_url(
            url,
            blobs=storage,
            region=settings.aws_region,
            endpoint_url=settings.dynamodb_endpoint_url,
            scan_limit=settings.dynamodb_scan_limit,
            inline_bytes=settings.dynamodb_inline_bytes,
        )
        await dynamodb.open()
        return dynamodb
    raise ValueError(f"unsupported index URL {url!r} (supported: sqlite:///, dynamodb://)")


async def open_services(settings: Settings) -> Services:
    """Open storage and index, recover from any crash, and wire the use cases."""
    storage = await _open_storage(settings.storage_url)
    index = await _open_index(settings, storage)
    stow = StowService(
        storage,
        index,
        store=settings.store,
        max_request_bytes=settings.max_request_bytes,
        header_memory_bytes=settings.header_memory_bytes,
        duplicates=settings.duplicates,
    )
    # The embedded index serves one process, so every claim left at start-up belongs to
    # an upload that died with the previous process.
    if isinstance(index, SqliteIndex):
        await stow.recover(older_than=time.time())
    else:
        # A shared index: younger claims may belong to other replicas' live uploads.
        try:
            cleared = await stow.recover(
                older_than=time.time() - settings.dynamodb_stale_claim_seconds
            )
        except BackendUnavailable as exc:  # the service starts; /ready reports it
            log.warning("start-up recovery skipped: %s", exc.message)
        else:
            if cleared:
                log.warning("cleared %d claims left by uploads that did not finish", cleared)
    wado = WadoService(storage, index, store=settings.store)
    qido = QidoService(index, store=settings.store)
    return Services(
        settings=settings, storage=storage, index=index, stow=stow, wado=wado, qido=qido
    )
