"""The sidecar's service class providers: C-ECHO, C-STORE, C-FIND, C-GET and C-MOVE.

pynetdicom calls these in its own association threads; the store, index and job queue
are async and live on the sidecar's event loop. Each handler hands its work to that loop
through an anyio blocking portal and waits for the answer, so one association stores
its instances in order while several associations run side by side.

C-STORE: the data set is kept byte for byte as received (``encoded_dataset``, never
decoded); the File Meta Information is built from the request and the presentation
context, and the Part 10 file goes through the STOW-RS store path. Every instance gets
a status (:func:`store_status`), never a silent drop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

from anyio.from_thread import BlockingPortal
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom.events import Event
from pynetdicom.presentation import build_context

from service.core.stow import InstanceOutcome, StowService
from service.dicom import reasons
from service.dimse.ae import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from service.dimse.find import FindService
from service.dimse.retrieve import RetrieveService
from service.index.base import InstanceRef

__all__ = ["Handlers", "StoredInstance", "part10_prefix", "store_status"]

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
#: PS3.4 B.2.3 (Storage) and PS3.7 C (general) failure statuses.
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
#: PS3.4 C.4.1.1.4 (C-FIND): unable to process.
UNABLE_TO_PROCESS = 0xC000
#: PS3.4 C.4.2.1.4 / C.4.3.1.4 (C-MOVE, C-GET): identifier does not match SOP class.
IDENTIFIER_MISMATCH = 0xA900
EXPLICIT_LE = "1.2.840.10008.1.2.1"

_STATUS_FOR_REASON = {
    reasons.OUT_OF_RESOURCES: OUT_OF_RESOURCES,
    reasons.DATASET_MISMATCH: DATASET_MISMATCH,
    reasons.CANNOT_UNDERSTAND: CANNOT_UNDERSTAND,
    reasons.PROCESSING_FAILURE: PROCESSING_FAILURE,
    # STOW's 0xB00E would read as a warning in DIMSE; PS3.7 has a failure for it.
    reasons.DUPLICATE_CONFLICT: DUPLICATE_SOP_INSTANCE,
    reasons.SOP_CLASS_NOT_SUPPORTED: 0x0122,
}
_CHUNK = 1024 * 1024


class StoredInstance(Protocol):
    """Called on the event loop after an instance is stored (forwarding rules)."""

    async def __call__(
        self, outcome: InstanceOutcome, calling_ae: str, prefix: bytes, dataset: bytes
    ) -> None: ...


def store_status(outcome: InstanceOutcome) -> Dataset:
    """The C-STORE response status of a store outcome, with an ErrorComment on failure."""
    status = Dataset()
    if outcome.stored:
        status.Status = SUCCESS
        return status
    reason = outcome.reason if outcome.reason is not None else reasons.PROCESSING_FAILURE
    status.Status = _STATUS_FOR_REASON.get(reason, PROCESSING_FAILURE)
    # ErrorComment is LO: at most 64 characters.
    status.ErrorComment = (outcome.message or "")[:64]
    return status


def part10_prefix(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble, ``DICM`` and File Meta Information for a received data set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    out = DicomBytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue()


async def _pieces(prefix: bytes, data: bytes) -> AsyncIterator[bytes]:
    yield prefix
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        yield bytes(view[start : start + _CHUNK])


class Handlers:
    """pynetdicom event handlers bound to the sidecar's services."""

    def __init__(
        self,
        portal: BlockingPortal,
        stow: StowService,
        find: FindService,
        retrieve: RetrieveService,
        stored: StoredInstance | None = None,
        move_destinations: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self.portal = portal
        self.stow = stow
        self.finder = find
        self.retriever = retrieve
        self.stored = stored
        #: C-MOVE destinations: AE title -> (host, port).
        self.move_destinations = move_destinations or {}

    def echo(self, _event: Event) -> int:
        return SUCCESS

    def store(self, event: Event) -> Dataset:
        request: Any = event.request
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_instance = str(request.AffectedSOPInstanceUID or "")
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        try:
            data = event.encoded_dataset(include_meta=False)
            prefix = part10_prefix(
                sop_class, sop_instance, str(event.context.transfer_syntax), calling_ae
            )
            outcome = self.portal.call(self._store, prefix, data, (sop_class, sop_instance))
        except Exception as exc:
            log.exception("C-STORE of %s from %s failed", sop_instance, calling_ae)
            outcome = InstanceOutcome(
                part=1,
                sop_instance_uid=sop_instance,
                reason=reasons.PROCESSING_FAILURE,
                message=f"the service failed while storing this instance: {exc}",
            )
        if outcome.stored and self.stored is not None:
            try:
                self.portal.call(self.stored, outcome, calling_ae, prefix, data)
            except Exception as exc:
                # Stored, but its forwarding could not be queued: fail, so that the
                # sender sends again (an identical re-send succeeds and queues again).
                log.exception("queueing the forwarding of %s failed", sop_instance)
                outcome = InstanceOutcome(
                    part=1,
                    sop_instance_uid=sop_instance,
                    reason=reasons.PROCESSING_FAILURE,
                    message=f"stored, but forwarding could not be queued: {exc}",
                )
        if not outcome.stored:
            log.warning(
                "C-STORE of %s from %s refused: %s", sop_instance, calling_ae, outcome.message
            )
        return store_status(outcome)

    async def _store(
        self, prefix: bytes, data: bytes, expected: tuple[str, str]
    ) -> InstanceOutcome:
        return await self.stow.store_instance(_pieces(prefix, data), expected=expected)

    def find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        request: Any = event.request
        model = str(request.AffectedSOPClassUID)
        try:
            identifier = event.identifier
            plan = self.finder.plan(identifier, model)
        except ValueError as exc:
            failure = Dataset()
            failure.ErrorComment = str(exc)[:64]
            log.warning("C-FIND refused: %s", exc)
            yield UNABLE_TO_PROCESS, failure
            return
        offset = 0
        while True:
            page, more = self.portal.call(self.finder.page, plan, offset)
            for match in page:
                if event.is_cancelled:
                    yield CANCEL, None
                    return
                yield PENDING, match
            if not more:
                return
            offset += plan.page_size

    def _retrieval(self, event: Event, what: str) -> list[InstanceRef] | Dataset:
        """The instances to send, or the failure identifier."""
        try:
            return self.portal.call(self.retriever.instances, event.identifier)
        except ValueError as exc:
            log.warning("%s refused: %s", what, exc)
            failure = Dataset()
            failure.FailedSOPInstanceUIDList = []
            return failure

    def _send(self, event: Event, refs: list[InstanceRef]) -> Iterator[Any]:
        yield len(refs)
        for ref in refs:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, self.portal.call(self.retriever.load, ref)

    def get(self, event: Event) -> Iterator[Any]:
        refs = self._retrieval(event, "C-GET")
        if isinstance(refs, Dataset):
            # pynetdicom answers success at once for zero sub-operations; one (never
            # started) lets the failure through, counted as failed.
            yield 1
            yield IDENTIFIER_MISMATCH, refs
            return
        yield from self._send(event, refs)

    def move(self, event: Event) -> Iterator[Any]:
        title = str(event.move_destination or "").strip()
        destination = self.move_destinations.get(title)
        if destination is None:
            log.warning("C-MOVE to unknown destination %r refused", title)
            yield None, None  # pynetdicom answers 0xA801, move destination unknown
            return
        refs = self._retrieval(event, "C-MOVE")
        if isinstance(refs, Dataset):
            yield destination
            yield 1
            yield IDENTIFIER_MISMATCH, refs
            return
        # Propose what will be sent: each SOP class in its stored transfer syntax, and
        # Explicit VR Little Endian as a fallback pydicom can convert to.
        contexts = sorted(
            {(r.sop_class_uid, r.transfer_syntax) for r in refs}
            | {(r.sop_class_uid, EXPLICIT_LE) for r in refs}
        )
        yield (*destination, {"contexts": [build_context(c, t) for c, t in contexts[:128]]})
        yield from self._send(event, refs)
