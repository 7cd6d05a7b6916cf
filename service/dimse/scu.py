"""Forwarding: configured destinations, the rules that pick instances for them, and
the C-STORE SCU that delivers one stored instance as a durable job.

Destinations and rules are one JSON setting (``DICOMWEB_DIMSE_FORWARD``), decoded
strictly into :class:`Destination` Structs. An instance stored through the sidecar is
forwarded to every destination whose rules match it (all instances when a destination
has no rules); each delivery is a :class:`service.jobs.base.Forward` job, so it survives
a restart, is retried with exponential backoff, and ends dead-lettered when it keeps
failing. The instance is sent as stored: the presentation context offers the stored
transfer syntax (and Explicit VR Little Endian); a peer that does not accept the stored
syntax fails the attempt with a clear error, nothing is transcoded.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from io import BytesIO
from typing import Annotated

import anyio
import anyio.to_thread
import msgspec
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from service.config import ConfigError, Settings
from service.core.stow import InstanceOutcome
from service.index.base import Index
from service.jobs.base import Forward, JobQueue, JobRecord
from service.storage.base import BlobStore

__all__ = ["Destination", "Forwarder", "Worker", "load_destinations"]

log = logging.getLogger(__name__)

# Send files from disk as they are (no decode, no re-encode).
pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True

_AE_TITLE = r"^[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]{0,15}$"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"


class Destination(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A DIMSE peer to forward to, and which instances it gets."""

    ae_title: Annotated[str, msgspec.Meta(pattern=_AE_TITLE)]
    host: Annotated[str, msgspec.Meta(min_length=1)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    #: Only instances of these modalities; empty: any.
    modality: list[str] = []
    #: Only instances received from these calling AE titles; empty: any.
    calling_ae: list[str] = []
    #: False: a C-MOVE destination only, nothing is forwarded to it.
    forward: bool = True

    def wants(self, modality: str, calling_ae: str) -> bool:
        return (
            self.forward
            and (not self.modality or modality in self.modality)
            and (not self.calling_ae or calling_ae in self.calling_ae)
        )


def load_destinations(settings: Settings) -> dict[str, Destination]:
    """The configured destinations by AE title; ConfigError when the JSON is wrong."""
    if not settings.dimse_forward.strip():
        return {}
    try:
        found = msgspec.json.decode(settings.dimse_forward, type=list[Destination])
    except msgspec.DecodeError as exc:
        raise ConfigError(f"DICOMWEB_DIMSE_FORWARD: {exc}") from exc
    by_title = {d.ae_title: d for d in found}
    if len(by_title) != len(found):
        raise ConfigError("DICOMWEB_DIMSE_FORWARD: each destination needs its own ae_title")
    return by_title


def _modality(part10: bytes) -> str:
    ds = dcmread(BytesIO(part10), stop_before_pixels=True, specific_tags=["Modality"])
    return str(ds.get("Modality", "")).strip()


class Forwarder:
    """Enqueues forward jobs for each stored instance the rules select."""

    def __init__(self, jobs: JobQueue, destinations: dict[str, Destination], store: str) -> None:
        self.jobs = jobs
        self.destinations = destinations
        self.store = store

    async def __call__(
        self, outcome: InstanceOutcome, calling_ae: str, prefix: bytes, dataset: bytes
    ) -> None:
        if not self.destinations or outcome.sop_instance_uid is None:
            return
        modality = ""
        if any(d.modality for d in self.destinations.values()):
            modality = await anyio.to_thread.run_sync(_modality, prefix + dataset)
        for destination in self.destinations.values():
            if destination.wants(modality, calling_ae):
                job = Forward(
                    store=self.store,
                    sop_uid=outcome.sop_instance_uid,
                    destination=destination.ae_title,
                )
                job_id = await self.jobs.enqueue(job)
                log.info("forward %s to %s queued as job %s", job.sop_uid, job.destination, job_id)


class SendError(Exception):
    """One delivery attempt failed; the message says why, for the job's record."""


def send(
    path: str, sop_class: str, transfer_syntax: str, destination: Destination, settings: Settings
) -> str:
    """C-STORE one Part 10 file to ``destination`` (blocking). Returns the outcome."""
    ae = AE(ae_title=settings.dimse_ae_title)
    ae.acse_timeout = settings.dimse_acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.dimse_network_timeout
    ae.add_requested_context(sop_class, transfer_syntax)
    if transfer_syntax != _EXPLICIT_LE:
        ae.add_requested_context(sop_class, _EXPLICIT_LE)
    peer = f"{destination.ae_title}@{destination.host}:{destination.port}"
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        raise SendError(f"association with {peer} {reason}")
    try:
        accepted = {
            str(cx.transfer_syntax[0])
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == sop_class and cx.transfer_syntax
        }
        if transfer_syntax not in accepted:
            raise SendError(
                f"{peer} does not accept SOP Class {sop_class} in the stored transfer "
                f"syntax {transfer_syntax} (accepted: {', '.join(sorted(accepted)) or 'none'})"
                "; instances are not transcoded"
            )
        status = assoc.send_c_store(path)
        code = int(status.Status) if "Status" in status else None
    finally:
        assoc.release()
    if code is None:
        raise SendError(f"no C-STORE response from {peer}")
    if code == 0 or 0xB000 <= code <= 0xBFFF:
        return f"sent to {peer}: status 0x{code:04X}"
    comment = str(status.get("ErrorComment", ""))
    raise SendError(f"{peer} answered C-STORE with status 0x{code:04X} {comment}".strip())


class Worker:
    """Runs forward jobs: claim, deliver, complete; or back off, and dead-letter."""

    def __init__(
        self,
        jobs: JobQueue,
        storage: BlobStore,
        index: Index,
        destinations: dict[str, Destination],
        settings: Settings,
        *,
        poll_seconds: float = 0.5,
    ) -> None:
        self.jobs = jobs
        self.storage = storage
        self.index = index
        self.destinations = destinations
        self.settings = settings
        self.poll_seconds = poll_seconds

    def backoff(self, attempts: int) -> float:
        """Seconds before retry ``attempts + 1``: base, 2 base, 4 base ... up to max."""
        base, cap = self.settings.job_retry_base, self.settings.job_retry_max
        return float(min(cap, base * 2 ** min(attempts - 1, 62)))

    async def run(self) -> None:
        while True:
            record = await self.jobs.claim(lease=self.settings.job_lease)
            if record is None:
                await anyio.sleep(self.poll_seconds)
                continue
            await self.run_one(record)

    async def run_one(self, record: JobRecord) -> None:
        try:
            message = await self._forward(record.job)
        except Exception as exc:
            error = str(exc) if isinstance(exc, SendError) else f"{type(exc).__name__}: {exc}"
            if record.attempts >= self.settings.job_max_attempts:
                log.error("job %s dead after %d attempts: %s", record.id, record.attempts, error)
                await self.jobs.fail(record.id, record.attempts, error, None)
            else:
                delay = self.backoff(record.attempts)
                log.warning(
                    "job %s attempt %d failed (%s); retry in %.1f s",
                    record.id,
                    record.attempts,
                    error,
                    delay,
                )
                await self.jobs.fail(record.id, record.attempts, error, time.time() + delay)
            return
        log.info("job %s: %s", record.id, message)
        await self.jobs.complete(record.id, record.attempts, message)

    async def _forward(self, job: Forward) -> str:
        destination = self.destinations.get(job.destination)
        if destination is None:
            raise SendError(f"destination {job.destination!r} is no longer configured")
        ref = await self.index.find(job.store, job.sop_uid)
        if ref is None:
            raise SendError(f"SOP Instance {job.sop_uid} is not stored in {job.store!r}")
        fd, path = tempfile.mkstemp(suffix=".dcm")
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in self.storage.read(ref.blob_key):
                    await anyio.to_thread.run_sync(out.write, chunk)
            return await anyio.to_thread.run_sync(
                send, path, ref.sop_class_uid, ref.transfer_syntax, destination, self.settings
            )
        finally:
            os.unlink(path)
