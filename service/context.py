"""The running service's parts, built from :class:`Settings` and shared by handlers."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio
import msgspec

from service.config import Settings
from service.core.frames import FrameService
from service.core.liveness import ProcessLocks
from service.core.metadata import MetadataDocuments
from service.core.qido import QidoService
from service.core.rendered import RenderedService
from service.core.stow import PROCESS_TOKEN, StowService
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
    metadata: MetadataDocuments
    frames: FrameService
    rendered: RenderedService
    #: This process's liveness lock beside an embedded index (None for shared backends).
    locks: ProcessLocks | None = None

    async def close(self) -> None:
        await self.index.close()
        await self.storage.close()
        if self.locks is not None:
            self.locks.close()


async def _open_storage(settings: Settings) -> BlobStore:
    url = settings.storage_url
    if url.startswith("file://"):
        store = LocalBlobStore.from_url(url, shared_sync=settings.local_sync == "auto")
        await store.open()
        return store
    if url.startswith("s3://"):
        # boto3 is imported only when S3 is chosen.
        from service.storage.s3 import S3BlobStore

        s3 = S3BlobStore.from_url(
            url,
            region=settings.aws_region,
            endpoint_url=settings.s3_endpoint_url,
            part_size=settings.s3_part_size,
            upload_concurrency=settings.s3_upload_concurrency,
            sse=settings.s3_sse,
            kms_key_id=settings.s3_kms_key_id,
        )
        await s3.open()
        return s3
    raise ValueError(f"unsupported storage URL {url!r} (supported: file://, s3://)")


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
    storage = await _open_storage(settings)
    index = await _open_index(settings, storage)
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
    # Decoding and transcoding share one pool of worker slots: they are CPU-bound.
    limiter = anyio.CapacityLimiter(settings.transcode_workers)
    wado = WadoService(
        storage,
        index,
        store=settings.store,
        transcode_max_bytes=settings.transcode_max_bytes,
        limiter=limiter,
    )
    qido = QidoService(index, store=settings.store)
    frames = FrameService(
        storage,
        index,
        store=settings.store,
        max_bytes=settings.transcode_max_bytes,
        limiter=limiter,
    )
    metadata = MetadataDocuments(
        storage,
        index,
        store=settings.store,
        memory_bytes=settings.metadata_cache_bytes,
        warm_delay=settings.metadata_warm_delay,
    )
    rendered = RenderedService(
        wado,
        memory_bytes=settings.render_memory_bytes,
        thumbnail_size=settings.thumbnail_size,
    )
    return Services(
        settings=settings,
        storage=storage,
        index=index,
        stow=stow,
        wado=wado,
        qido=qido,
        metadata=metadata,
        frames=frames,
        rendered=rendered,
        locks=locks,
    )
