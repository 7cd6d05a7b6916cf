"""STOW-RS use case: store the instances of a request body, streaming, part by part.

For each part (see ``../shared/DESIGN.md``, "The store path"):

1. Bytes are kept only until the Part 10 header (everything before top-level Pixel
   Data) is complete; a large header spills to a temporary file.
2. The header is parsed and validated; the instance is claimed in the index.
3. The kept bytes and then the rest of the part stream to the BlobStore unchanged,
   hashed (SHA-256) on the way, while the scanner keeps walking the data so a
   truncated file is caught.
4. The blob is committed, then the index row (two-phase); any failure aborts the blob
   and releases the claim, so nothing half-stored is ever visible.

Per-instance results are data (:class:`InstanceOutcome`); the HTTP layer turns them into
the PS3.18 response.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Final, Literal, NamedTuple

import anyio
import anyio.abc
import msgspec
from pydicom import Dataset

from service import offload
from service.core.channel import Channel
from service.core.keys import instance_key
from service.core.levels import level_documents
from service.core.spool import HeaderSpool
from service.dicom import reasons
from service.dicom.dicomjson import element_text, instance_object
from service.dicom.frames import Layout, frame_table
from service.dicom.part10 import Part10Scanner, ScanResult, parse_header
from service.dicom.preamble import PREFIX, PREFIX_LENGTH, missing_preamble
from service.dicom.uid import is_valid_uid
from service.dicomweb.media import parse_media_type
from service.dicomweb.multipart import MultipartParser, PartBegin, PartData, PartEnd
from service.errors import (
    ClientError,
    InstanceRejected,
    MalformedRequest,
    PayloadTooLarge,
)
from service.index.base import Index, InstanceRecord, InstanceRef
from service.storage.base import BlobStore, BlobWriter

__all__ = ["PROCESS_TOKEN", "InstanceOutcome", "StowResult", "StowService", "claim_process"]

log = logging.getLogger(__name__)

# How long an upload waits for a concurrent upload of the same SOP Instance UID.
CLAIM_WAIT_SECONDS = 30.0
CLAIM_POLL_SECONDS = 0.05

#: This process's token. Every claim it takes is owned by ``f"{PROCESS_TOKEN}-{n}"``, so
#: start-up recovery can tell claims of a live process from those of a dead one.
PROCESS_TOKEN = uuid.uuid4().hex[:12]
_SEQUENCE = itertools.count()


def claim_process(owner: str) -> str:
    """The process token of a claim's owner."""
    return owner.partition("-")[0]


class InstanceOutcome(msgspec.Struct, kw_only=True):
    """What happened to one part of a STOW request."""

    part: int
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    stored: bool = False
    #: PS3.18 failure reason code when not stored.
    reason: int | None = None
    #: Why it failed, for people.
    message: str | None = None


class StowResult(msgspec.Struct, kw_only=True):
    outcomes: list[InstanceOutcome]
    #: A request-level problem met part-way through the body (bad framing, oversize).
    #: Parts completed before it stay stored and are listed in ``outcomes``.
    error: ClientError | None = None


class _Identity(NamedTuple):
    """The validated UIDs of an instance."""

    study: str
    series: str
    sop: str
    sop_class: str


class _Part:
    """One part's journey from bytes to a committed instance."""

    def __init__(
        self,
        service: StowService,
        number: int,
        study_uid: str | None,
        expected: tuple[str, str] | None = None,
    ) -> None:
        self.svc = service
        self.outcome = InstanceOutcome(part=number)
        self.expected_study = study_uid
        # (SOP Class UID, SOP Instance UID) the sender announced (C-STORE request).
        self.expected = expected
        self.scanner = Part10Scanner()
        self.spool: HeaderSpool | None = HeaderSpool(service.header_memory_bytes)
        self.hasher = hashlib.sha256()
        self.ds: Dataset | None = None
        self.identity: _Identity | None = None
        self.key = ""
        self.writer: BlobWriter | None = None
        self.existing: InstanceRef | None = None
        self.owner = ""
        self.claimed = False
        self.failed = False
        # The first bytes, held until we know whether the preamble is missing.
        self.head: bytes | None = b""

    # -- receiving bytes -------------------------------------------------------------

    async def feed(self, data: bytes) -> None:
        if self.failed:
            return  # the rest of a failed part is read and dropped
        if self.head is not None:
            self.head += data
            if len(self.head) < PREFIX_LENGTH:
                return
            data = self._take_head()
        await self._consume(data)

    def _take_head(self) -> bytes:
        head, self.head = self.head or b"", None
        return PREFIX + head if missing_preamble(head) else head

    async def _consume(self, data: bytes) -> None:
        try:
            self.scanner.feed(data)
            if self.spool is not None:
                await self.spool.write(data)
                header_end = self.scanner.header_end
                if header_end is not None:
                    await self._begin_instance(header_end)
            else:
                await self._push(data)
        except Exception as exc:
            await self._fail(exc)

    async def finish(self) -> InstanceOutcome:
        if self.failed:
            return self.outcome
        if self.head is not None:  # a part shorter than a preamble
            await self._consume(self._take_head())
            if self.failed:
                return self.outcome
        try:
            scan = self.scanner.finish()
            if self.spool is not None:
                # No top-level Pixel Data (or a deflated dataset): the header is the file.
                await self._begin_instance(scan.header_end)
            await self._complete(scan)
        except Exception as exc:
            await self._fail(exc)
        return self.outcome

    async def abort(self, reason: int, message: str) -> InstanceOutcome:
        if not self.failed:
            await self._fail(InstanceRejected(reason, message))
        return self.outcome

    # -- steps -----------------------------------------------------------------------

    async def _begin_instance(self, header_end: int) -> None:
        spool = self.spool
        assert spool is not None
        # The scanner has walked the File Meta already: the parse starts at the data set.
        parser = functools.partial(parse_header, meta=self.scanner.file_meta)
        self.ds = ds = await spool.parse(parser, header_end)
        self.identity = ident = self._validate(ds)
        self.owner = f"{PROCESS_TOKEN}-{next(_SEQUENCE)}"
        await self._claim(ident.study, ident.series, ident.sop)
        if self.key:
            self.writer = await self.svc.storage.open_writer(self.key)
        self.spool = None
        async for chunk in spool.replay():
            await self._push(chunk)

    def _validate(self, ds: Dataset) -> _Identity:
        out = self.outcome
        out.sop_class_uid = _text(ds, "SOPClassUID")
        out.sop_instance_uid = _text(ds, "SOPInstanceUID")
        out.study_uid = _text(ds, "StudyInstanceUID")
        out.series_uid = _text(ds, "SeriesInstanceUID")
        for keyword, tag, value in (
            ("SOPClassUID", "(0008,0016)", out.sop_class_uid),
            ("SOPInstanceUID", "(0008,0018)", out.sop_instance_uid),
            ("StudyInstanceUID", "(0020,000D)", out.study_uid),
            ("SeriesInstanceUID", "(0020,000E)", out.series_uid),
        ):
            if not value:
                raise InstanceRejected(reasons.CANNOT_UNDERSTAND, f"{keyword} {tag} is missing")
            if not is_valid_uid(value):
                raise InstanceRejected(
                    reasons.CANNOT_UNDERSTAND,
                    f"{keyword} {tag} {value[:80]!r} is not a valid UID (PS3.5 §9.1)",
                )
        ident = _Identity(
            study=out.study_uid or "",
            series=out.series_uid or "",
            sop=out.sop_instance_uid or "",
            sop_class=out.sop_class_uid or "",
        )
        if self.expected is not None and (ident.sop_class, ident.sop) != self.expected:
            raise InstanceRejected(
                reasons.DATASET_MISMATCH,
                f"the data set is SOP Class {ident.sop_class}, SOP Instance {ident.sop}; "
                f"the request announced {self.expected[0]}, {self.expected[1]}",
            )
        if self.expected_study is not None and ident.study != self.expected_study:
            raise InstanceRejected(
                reasons.STUDY_MISMATCH,
                f"StudyInstanceUID {ident.study} differs from the study in the request "
                f"URL, {self.expected_study}",
            )
        return ident

    async def _claim(self, study: str, series: str, sop: str) -> None:
        """Claim the instance in the index and decide the blob key.

        The key depends on what is already stored, so the index decides it with the
        claim, from the instance committed at that moment.
        """
        svc = self.svc
        fresh = instance_key(svc.store, study, series, sop)

        def key_for(existing: InstanceRef | None) -> str:
            if existing is None or svc.duplicates == "reject":
                # With "reject" nothing is written: identical bytes succeed, others are
                # refused; the claim still names where the blob would go.
                return fresh
            # Never overwrite the blob a committed row points at: a crash before the
            # index commit would leave that row describing other bytes.
            return fresh.removesuffix(".dcm") + f".{self.owner}.dcm"

        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        while True:
            claimed = await svc.index.claim_instance(svc.store, sop, self.owner, key_for)
            if claimed is not None:
                self.claimed = True
                self.existing = claimed.existing
                hash_only = claimed.existing is not None and svc.duplicates == "reject"
                self.key = "" if hash_only else claimed.blob_key
                return
            if time.monotonic() > deadline:
                raise InstanceRejected(
                    reasons.PROCESSING_FAILURE,
                    f"another upload of SOP Instance {sop} has been in progress for "
                    f"over {CLAIM_WAIT_SECONDS:.0f} s; try again later",
                )
            await anyio.sleep(CLAIM_POLL_SECONDS)

    async def _push(self, data: bytes) -> None:
        # Hashed on the event loop, chunk by chunk: SHA-256 runs at about 1.6 GB/s here
        # (40 µs per 64 KiB), less than a thread hop costs in context switches.
        self.hasher.update(data)
        if self.writer is not None:
            await self.writer.write(data)

    async def _complete(self, scan: ScanResult) -> None:
        ds, ident, out, svc = self.ds, self.identity, self.outcome, self.svc
        if ds is None or ident is None:
            raise RuntimeError("instance completed before its header was parsed")
        digest = self.hasher.hexdigest()
        existing = self.existing
        if existing is not None and existing.sha256 == digest:
            await self._discard()  # an identical re-upload: idempotent success
            out.stored = True
            return
        if existing is not None and svc.duplicates == "reject":
            raise InstanceRejected(
                reasons.DUPLICATE_CONFLICT,
                f"SOP Instance {ident.sop} is already stored with different "
                "content; the stored instance is kept (DICOMWEB_DUPLICATES=reject)",
            )
        described = await offload.call_sized(scan.header_end, _describe, ds, scan)
        record = InstanceRecord(
            store=svc.store,
            study_uid=ident.study,
            series_uid=ident.series,
            sop_uid=ident.sop,
            sop_class_uid=ident.sop_class,
            transfer_syntax=scan.transfer_syntax,
            blob_key=self.key,
            size=scan.size,
            sha256=digest,
            attributes=described.attributes,
            metadata=described.metadata,
            layout=described.layout,
            study_document=described.study_document,
            series_document=described.series_document,
            stored_at=time.time(),
        )
        if self.writer is None:
            raise RuntimeError("no blob was written for a new instance")
        await self.writer.commit()
        self.writer = None  # committed: a failure from here on deletes the blob instead
        try:
            # Waited for even when cancelled: the row commits all the same, and a
            # cancelled wait would delete the blob a committed row names.
            with anyio.CancelScope(shield=True):
                await svc.index.commit(record, self.owner)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await svc.storage.delete(self.key)
            raise
        self.claimed = False
        if existing is not None and existing.blob_key != self.key:
            await svc.storage.delete(existing.blob_key)
        out.stored = True

    async def _discard(self) -> None:
        with anyio.CancelScope(shield=True):
            writer, self.writer = self.writer, None
            try:
                if writer is not None:
                    await writer.abort()
            finally:
                # A failed abort (storage unreachable) must not keep the claim, or every
                # retry of this instance would wait for a claim nobody holds.
                if self.claimed:
                    self.claimed = False
                    assert self.identity is not None  # claims are taken after validation
                    await self.svc.index.release(self.svc.store, self.identity.sop, self.owner)
                spool, self.spool = self.spool, None
                if spool is not None:
                    await spool.close()

    async def _fail(self, exc: BaseException) -> None:
        self.failed = True
        out = self.outcome
        if isinstance(exc, InstanceRejected):
            out.reason, out.message = exc.reason, exc.message
        elif isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
            out.reason, out.message = reasons.OUT_OF_RESOURCES, "storage is full"
        else:
            log.exception("storing part %d failed", out.part, exc_info=exc)
            out.reason = reasons.PROCESSING_FAILURE
            out.message = f"the service failed while storing this instance: {exc}"
        try:
            await self._discard()
        except Exception:
            log.exception("cleaning up after part %d failed", out.part)


_TAGS: Final = {
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}


def _text(ds: Dataset, keyword: str) -> str | None:
    return element_text(ds, _TAGS[keyword]) or None


class _Description(NamedTuple):
    metadata: bytes
    attributes: dict[str, str]
    layout: bytes
    study_document: bytes
    series_document: bytes


def _describe(ds: Dataset, scan: ScanResult) -> _Description:
    """What ingest computes for search and retrieval (blocking: runs in a thread)."""
    attributes: dict[str, str] = {}
    # A deflated instance's pixel data is found in the inflated data set (part10).
    pixel = scan.pixel_data or getattr(ds, "deflated_pixel_data", None)
    instance = instance_object(ds, pixel, index=attributes)
    attributes["TransferSyntaxUID"] = scan.transfer_syntax
    layout = b""
    if scan.pixel_data is not None:
        table = frame_table(ds, scan.pixel_data, scan.transfer_syntax)
        fields = msgspec.structs.asdict(scan.pixel_data)
        layout = msgspec.json.encode(Layout(**fields, frames=table))
    metadata = msgspec.json.encode(instance)
    study_document, series_document = level_documents(instance)
    return _Description(metadata, attributes, layout, study_document, series_document)


#: Parts of one request being stored at once: while one waits for its durable writes,
#: the next is already being read. Bounds a request's memory to this many headers.
PARTS_IN_FLIGHT = 4


class _End:
    """Sent to a part's task: the part ended at its boundary."""


class _Abort(msgspec.Struct, frozen=True):
    """Sent to a part's task: the body broke off inside the part."""

    reason: int
    message: str


_Message = bytes | _End | _Abort


class _Upload:
    """The parts of one request body, read in order and stored concurrently.

    The reader hands each part's bytes to that part's own task through a small bounded
    channel, so reading the next part does not wait for the previous one's durable
    writes (claim, blob fsync, index commit), which take most of a small instance's
    time. At most :data:`PARTS_IN_FLIGHT` parts are in progress; the reader waits for a
    slot before starting another. Outcomes keep the parts' order.
    """

    def __init__(
        self,
        service: StowService,
        boundary: str | None,
        study_uid: str | None,
        tasks: anyio.abc.TaskGroup,
    ) -> None:
        self.svc = service
        self.study_uid = study_uid
        self.tasks = tasks
        self.outcomes: list[InstanceOutcome] = []
        # asyncio's own semaphore and channel: anyio's checkpoint on every operation
        # cost more than the hand-off itself (see service.core.channel).
        self.slots = asyncio.Semaphore(PARTS_IN_FLIGHT)
        self.parser = MultipartParser(boundary) if boundary is not None else None
        self.current: Channel[_Message] | None = None
        self.single = boundary is None

    async def _start_part(self) -> None:
        await self.slots.acquire()
        number = len(self.outcomes) + 1
        outcome = InstanceOutcome(part=number)
        self.outcomes.append(outcome)
        channel = Channel[_Message](8)
        self.current = channel
        self.tasks.start_soon(self._store_part, _Part(self.svc, number, self.study_uid), channel)

    async def _store_part(self, part: _Part, channel: Channel[_Message]) -> None:
        index = part.outcome.part - 1
        try:
            while (message := await channel.receive()) is not None:
                if isinstance(message, bytes):
                    await part.feed(message)
                elif isinstance(message, _End):
                    self.outcomes[index] = await part.finish()
                    return
                else:
                    self.outcomes[index] = await part.abort(message.reason, message.message)
                    return
            # The reader went away without ending the part: the request was interrupted.
            self.outcomes[index] = await part.abort(
                reasons.PROCESSING_FAILURE, "request interrupted"
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                self.outcomes[index] = await part.abort(
                    reasons.PROCESSING_FAILURE, "request interrupted"
                )
            raise
        finally:
            self.slots.release()

    async def _end_part(self, message: _End | _Abort) -> None:
        channel, self.current = self.current, None
        if channel is not None:
            try:
                await channel.send(message)
            finally:
                channel.close()

    async def feed(self, chunk: bytes) -> None:
        if self.parser is None:
            if self.single:
                self.single = False
                await self._start_part()
            if self.current is not None:
                await self.current.send(chunk)
            return
        for event in self.parser.feed(chunk):
            if isinstance(event, PartData):
                if self.current is not None:
                    await self.current.send(bytes(event.data))
            elif isinstance(event, PartBegin):
                problem = _part_type_problem(event.headers)
                if problem:  # its bytes are skipped: no part task, no channel
                    self.outcomes.append(
                        InstanceOutcome(
                            part=len(self.outcomes) + 1,
                            reason=reasons.CANNOT_UNDERSTAND,
                            message=problem,
                        )
                    )
                else:
                    await self._start_part()
            elif isinstance(event, PartEnd):
                await self._end_part(_End())

    async def finish(self) -> None:
        """The body ended; raises :class:`MalformedRequest` if it ended too soon."""
        if self.parser is not None:
            self.parser.close()
        else:
            if self.single:  # an empty application/dicom body
                self.single = False
                await self._start_part()
            await self._end_part(_End())

    async def fail(self, exc: MalformedRequest | PayloadTooLarge) -> None:
        """The body broke off or overflowed: the part in progress fails with it."""
        reason = (
            reasons.OUT_OF_RESOURCES
            if isinstance(exc, PayloadTooLarge)
            else reasons.CANNOT_UNDERSTAND
        )
        await self._end_part(_Abort(reason, exc.message))

    def close(self) -> None:
        """Stop feeding the part in progress (its task then aborts it)."""
        channel, self.current = self.current, None
        if channel is not None:
            channel.close()


class StowService:
    """Stores STOW-RS request bodies. Framework-free: takes an async byte stream."""

    def __init__(
        self,
        storage: BlobStore,
        index: Index,
        *,
        store: str,
        max_request_bytes: int,
        header_memory_bytes: int,
        duplicates: Literal["reject", "replace"],
    ) -> None:
        self.storage = storage
        self.index = index
        self.store = store
        self.max_request_bytes = max_request_bytes
        self.header_memory_bytes = header_memory_bytes
        self.duplicates = duplicates

    async def store_body(
        self,
        body: AsyncIterator[bytes],
        *,
        boundary: str | None,
        study_uid: str | None = None,
    ) -> StowResult:
        """Store every instance of ``body``.

        ``boundary`` is the multipart/related boundary, or None for a single
        ``application/dicom`` body. ``study_uid`` is the study named in the URL, which
        every instance must belong to.
        """
        received = 0
        error: MalformedRequest | PayloadTooLarge | None = None
        # An error of the body's stream (the client went away) is raised as itself,
        # not wrapped in the task group's ExceptionGroup.
        broken: Exception | None = None
        async with anyio.create_task_group() as tasks:
            upload = _Upload(self, boundary, study_uid, tasks)
            try:
                async for chunk in body:
                    received += len(chunk)
                    over = received - self.max_request_bytes
                    # Bytes up to the limit still count: parts completed within it are kept.
                    await upload.feed(chunk[: len(chunk) - over] if over > 0 else chunk)
                    if over > 0:
                        raise PayloadTooLarge(
                            f"the request body exceeds the limit of {self.max_request_bytes} "
                            "bytes (DICOMWEB_MAX_REQUEST_BYTES)"
                        )
                await upload.finish()
            except (MalformedRequest, PayloadTooLarge) as exc:
                error = exc
                await upload.fail(exc)
            except Exception as exc:
                broken = exc
            finally:
                upload.close()  # no-op unless the client went away or we were cancelled
        if broken is not None:
            raise broken
        if error is None and not upload.outcomes:
            raise MalformedRequest("the request body contains no DICOM instance")
        return StowResult(outcomes=upload.outcomes, error=error)

    async def store_instance(
        self, chunks: AsyncIterator[bytes], *, expected: tuple[str, str] | None = None
    ) -> InstanceOutcome:
        """Store one Part 10 instance (the DIMSE C-STORE path).

        The same pipeline as each part of :meth:`store_body`: the same validation,
        claims, duplicate policy, reason codes and two-phase commit. ``expected`` is the
        (SOP Class UID, SOP Instance UID) the instance must have (0xA900 otherwise).
        """
        part = _Part(self, 1, None, expected)
        try:
            received = 0
            async for chunk in chunks:
                received += len(chunk)
                if received > self.max_request_bytes:
                    return await part.abort(
                        reasons.OUT_OF_RESOURCES,
                        f"the instance exceeds the limit of {self.max_request_bytes} bytes "
                        "(DICOMWEB_MAX_REQUEST_BYTES)",
                    )
                await part.feed(chunk)
            return await part.finish()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await part.abort(reasons.PROCESSING_FAILURE, "store interrupted")
            raise

    async def recover(self, older_than: float, alive: Callable[[str], bool] | None = None) -> int:
        """Clean up after uploads that died between claim and commit (a crash).

        A claim older than ``older_than`` whose blob no committed row points at has its
        blob deleted. ``alive`` says whether the process that took a claim (its
        :data:`PROCESS_TOKEN`) still runs; claims of live processes are kept. Returns
        how many claims were cleared.
        """
        cleared = 0
        for claim in await self.index.stale_claims(older_than):
            if alive is not None and alive(claim_process(claim.owner)):
                continue
            ref = await self.index.find(claim.store, claim.sop_uid)
            if ref is None or ref.blob_key != claim.blob_key:
                await self.storage.delete(claim.blob_key)
            await self.index.release(claim.store, claim.sop_uid, claim.owner)
            cleared += 1
        return cleared


def _part_type_problem(headers: dict[str, str]) -> str | None:
    """Why a part cannot be stored as a DICOM instance, judging by its Content-Type."""
    content_type = headers.get("content-type")
    if content_type is None:
        return None  # the request's type parameter says application/dicom
    try:
        media = parse_media_type(content_type)
    except MalformedRequest as exc:
        return f"part Content-Type: {exc.message}"
    if media.type != "application/dicom":
        return (
            f"part has Content-Type {media.type}; this service stores application/dicom "
            "parts (Part 10 files)"
        )
    return None
