"""Study and series metadata as precomputed, gzip-compressed documents.

A viewer opening a 1,000-instance series asks for its ``/metadata`` first, and again on
every visit. Concatenating and compressing 1,000 instance documents each time is the
slow part, so the result is kept, keyed by the study's (or series') index revision:

* in memory (an LRU bounded in bytes), for the common case of a hot study;
* in storage, beside the instances (``{store}/cache/metadata/...``), so that a restart
  or another replica behind the load balancer does not start cold.

A document is rebuilt only when the revision moves, i.e. when an instance of the study
(or series) is stored or replaced. The revision is also the ETag, so a viewer that
already has the document gets ``304 Not Modified`` for the cost of one index lookup.
Studies that were just written are rebuilt in the background once they have been quiet
for a moment (:meth:`MetadataDocuments.touch`), so the first viewer does not pay either.

The stored instance documents carry a placeholder for the service's base URL in their
BulkDataURIs; the base URL is part of the cache key, so documents for different base
URLs (rare: several host names) never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import math
import struct
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio
import msgspec

from service.dicom.dicomjson import BULK_PLACEHOLDER
from service.errors import NotFound, ServiceError
from service.index.base import Index, InstanceRef
from service.storage.base import BlobNotFound, BlobStore

__all__ = ["MetadataDocument", "MetadataDocuments", "json_array"]

log = logging.getLogger("service.metadata")

#: A stored document starts with its revision (8 bytes, big endian) and the SHA-256 of
#: the gzip data that follows, so a damaged file is rebuilt rather than served.
_HEADER = struct.Struct(">Q32s")
#: Fast enough to build a 1,000-instance document in well under a second, and within
#: a few percent of level 9's size on DICOM JSON.
_GZIP_LEVEL = 6
#: How often the warmer looks again while requests are being served.
IDLE_POLL_SECONDS = 0.02


def json_array(found: list[tuple[InstanceRef, bytes]], base: str) -> bytes:
    """Stored instance documents as one DICOM JSON array, each document's BulkDataURIs
    made absolute: the placeholder becomes its instance's URL under ``base``."""
    placeholder = BULK_PLACEHOLDER.encode()
    parts = [
        doc.replace(
            placeholder,
            f"{base}/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_uid}".encode(),
        )
        for r, doc in found
    ]
    return b"[" + b",".join(parts) + b"]"


class MetadataDocument(msgspec.Struct, frozen=True):
    """One study's or series' metadata: a JSON array of instance objects, gzipped."""

    revision: int
    gzipped: bytes

    @property
    def etag(self) -> str:
        # Weak: the same document is sent gzipped or plain depending on Accept-Encoding.
        return f'W/"{self.revision:x}"'

    def json(self) -> bytes:
        return gzip.decompress(self.gzipped)


class _Memory:
    """An LRU of documents bounded by their compressed size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.items: OrderedDict[tuple[str, ...], MetadataDocument] = OrderedDict()

    def get(self, key: tuple[str, ...]) -> MetadataDocument | None:
        doc = self.items.get(key)
        if doc is not None:
            self.items.move_to_end(key)
        return doc

    def put(self, key: tuple[str, ...], doc: MetadataDocument) -> None:
        if len(doc.gzipped) > self.limit:
            return
        old = self.items.pop(key, None)
        if old is not None:
            self.size -= len(old.gzipped)
        self.items[key] = doc
        self.size += len(doc.gzipped)
        while self.size > self.limit:
            _, evicted = self.items.popitem(last=False)
            self.size -= len(evicted.gzipped)


class MetadataDocuments:
    """Builds, caches and warms the study and series metadata documents of a store."""

    def __init__(
        self,
        storage: BlobStore,
        index: Index,
        *,
        store: str,
        memory_bytes: int,
        warm_delay: float,
    ) -> None:
        self.storage = storage
        self.index = index
        self.store = store
        self.memory = _Memory(memory_bytes)
        self.warm_delay = warm_delay
        self._dirty: dict[tuple[str, str], float] = {}  # (study, base) -> due time
        self._wake = asyncio.Event()
        self._building: dict[tuple[str, ...], asyncio.Future[MetadataDocument]] = {}
        #: Whether the process is serving a request now. Warming is background work: it
        #: waits for a moment without one, so it never takes CPU from uploads or
        #: searches (a study of 50 tiny instances costs 5.9 ms to warm, 7 % of the CPU
        #: its upload takes). Under unbroken load a study is not warmed, and its first
        #: request builds it.
        self.busy: Callable[[], bool] = lambda: False

    # -- serving ---------------------------------------------------------------------

    async def revision(self, study: str, series: str | None) -> int:
        """The study's (series') revision; :class:`NotFound` when nothing is stored."""
        revision = await self.index.revision(self.store, study, series)
        if revision is None:
            raise NotFound.unstored(study, series)
        return revision

    async def document(
        self, study: str, series: str | None, base: str, revision: int | None = None
    ) -> MetadataDocument:
        """The current document, from memory, storage, or built now."""
        if revision is None:
            revision = await self.revision(study, series)
        key = self._key(study, series, base)
        doc = self.memory.get(key)
        if doc is not None and doc.revision == revision:
            return doc
        # One build per document at a time: concurrent viewers of a new study wait for
        # the same build instead of each doing it.
        pending = self._building.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[MetadataDocument] = asyncio.get_running_loop().create_future()
        self._building[key] = future
        try:
            doc = await self._load_or_build(key, study, series, base, revision)
            future.set_result(doc)
            return doc
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._building[key]

    def _key(self, study: str, series: str | None, base: str) -> tuple[str, ...]:
        return (study, series or "", hashlib.sha256(base.encode()).hexdigest()[:16])

    def _blob_key(self, key: tuple[str, ...]) -> str:
        study, series, base = key
        name = f"{series}.{base}" if series else f"study.{base}"
        return f"{self.store}/cache/metadata/{study}/{name}.json.gz"

    async def _load_or_build(
        self, key: tuple[str, ...], study: str, series: str | None, base: str, revision: int
    ) -> MetadataDocument:
        doc = await self._load(key)
        if doc is None or doc.revision != revision:
            doc = await self._build(key, study, series, base)
        if doc.revision == revision:
            self.memory.put(key, doc)
        return doc

    async def _load(self, key: tuple[str, ...]) -> MetadataDocument | None:
        try:
            data = b"".join([chunk async for chunk in self.storage.read(self._blob_key(key))])
        except BlobNotFound:
            return None
        except ServiceError as exc:  # the cache is an optimisation: build instead
            log.warning("metadata cache unreadable: %s", exc)
            return None
        if len(data) < _HEADER.size:
            return None
        revision, digest = _HEADER.unpack_from(data)
        gzipped = data[_HEADER.size :]
        if hashlib.sha256(gzipped).digest() != digest:
            log.warning("metadata cache %s is damaged; rebuilding it", self._blob_key(key))
            return None
        return MetadataDocument(revision, gzipped)

    async def _build(
        self, key: tuple[str, ...], study: str, series: str | None, base: str
    ) -> MetadataDocument:
        # The revision is read before and after the rows: a document is labelled with
        # a revision only if no instance was stored while it was being read.
        before = await self.revision(study, series)
        found = await self.index.metadata(self.store, study, series)
        after = await self.index.revision(self.store, study, series)
        if not found:
            raise NotFound.unstored(study, series)
        gzipped = await anyio.to_thread.run_sync(_compress, found, base)
        # A document read while the revision moved is served but kept under revision 0,
        # which no request matches, so the next request builds it again.
        doc = MetadataDocument(before if after == before else 0, gzipped)
        if doc.revision:
            await self._save(key, doc)
        return doc

    async def _save(self, key: tuple[str, ...], doc: MetadataDocument) -> None:
        try:
            # Not fsynced: a document lost or torn by a crash fails its digest check
            # and is built again. Three fsyncs per study were most of warming's cost.
            writer = await self.storage.open_writer(self._blob_key(key), durable=False)
            try:
                digest = hashlib.sha256(doc.gzipped).digest()
                await writer.write(_HEADER.pack(doc.revision, digest) + doc.gzipped)
                await writer.commit()
            except BaseException:
                await writer.abort()
                raise
        except ServiceError as exc:  # serve it anyway; the next request tries again
            log.warning("metadata cache not written: %s", exc)

    # -- warming ---------------------------------------------------------------------

    def touch(self, study: str, base: str) -> None:
        """An instance of ``study`` was just stored: rebuild its documents once it has
        been quiet for ``warm_delay`` seconds."""
        if self.warm_delay <= 0:
            return
        self._dirty[(study, base)] = time.monotonic() + self.warm_delay
        self._wake.set()

    async def warm_forever(self) -> None:
        """The background task that rebuilds touched studies' documents."""
        while True:
            due = [k for k, t in self._dirty.items() if t <= time.monotonic()]
            for key in due:
                # Polled: "no request for a while" is a lasting state, not an event.
                while self.busy():  # noqa: ASYNC110
                    await asyncio.sleep(IDLE_POLL_SECONDS)
                # Touched again while it waited: not quiet yet, its turn comes later.
                if self._dirty.get(key, math.inf) > time.monotonic():
                    continue
                del self._dirty[key]
                await self._warm(*key)
            self._wake.clear()
            wait = min(self._dirty.values(), default=None)
            timeout = None if wait is None else max(0.0, wait - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _warm(self, study: str, base: str) -> None:
        try:
            await self._build_study(study, base)
        except ServiceError as exc:
            log.info("metadata for study %s not prebuilt: %s", study, exc)
        except Exception:
            log.exception("metadata for study %s not prebuilt", study)

    async def _build_study(self, study: str, base: str) -> None:
        """Build and keep the study's document and each of its series' documents, all
        from one read of the study's instances: building each series document on its
        own read every instance twice, and cost four times the index round trips."""
        before = await self.index.revision(self.store, study)
        found = await self.index.metadata(self.store, study)
        by_series: dict[str, list[tuple[InstanceRef, bytes]]] = {}
        for row in found:
            by_series.setdefault(row[0].series_uid, []).append(row)
        revisions = {uid: await self.index.revision(self.store, study, uid) for uid in by_series}
        after = await self.index.revision(self.store, study)
        # Every store into a series also advances its study's revision, so an unchanged
        # study revision means the rows and the series revisions read between agree.
        # A study that changed meanwhile was touched again, and is warmed again.
        if before is None or after != before or not found:
            return
        wanted = [(self._key(study, None, base), before, found)]
        for uid, rows in by_series.items():
            revision = revisions[uid]
            if revision is not None:
                wanted.append((self._key(study, uid, base), revision, rows))
        wanted = [(key, rev, rows) for key, rev, rows in wanted if not self._fresh(key, rev)]
        compressed = await anyio.to_thread.run_sync(
            lambda: [_compress(rows, base) for _, _, rows in wanted]
        )
        for (key, revision, _), gzipped in zip(wanted, compressed, strict=True):
            doc = MetadataDocument(revision, gzipped)
            await self._save(key, doc)
            self.memory.put(key, doc)

    def _fresh(self, key: tuple[str, ...], revision: int) -> bool:
        doc = self.memory.get(key)
        return doc is not None and doc.revision == revision


def _compress(found: list[tuple[InstanceRef, bytes]], base: str) -> bytes:
    return gzip.compress(json_array(found, base), _GZIP_LEVEL)
