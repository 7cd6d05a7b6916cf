"""The JobQueue interface: durable background work (forwarding now; imports, de-id later).

A job is data: a tagged msgspec Struct (:data:`Job`). The queue keeps one record per
job with its state, attempts, next run time and last error, so that work survives a
restart of the process that runs it:

::

    pending --claim--> running --complete--> done
       ^                  |
       |                  +--fail(retry_at)--> pending (runs again at retry_at)
       |                  +--fail(None)------> dead    (an operator may retry it)
       +------retry-------------------------------+

A claim is a lease: a job whose worker died is claimed again once the lease runs out.
Implementations: ``sqlite`` (embedded default) and ``dynamodb`` (shared by replicas).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import msgspec

__all__ = ["Forward", "Job", "JobQueue", "JobRecord", "JobState", "job_decoder"]

JobState = Literal["pending", "running", "done", "dead"]


class Forward(msgspec.Struct, tag="forward", frozen=True, kw_only=True):
    """Send one stored instance to a DIMSE peer (C-STORE)."""

    store: str
    sop_uid: str
    #: AE title of a configured destination (``DICOMWEB_DIMSE_FORWARD``).
    destination: str


#: Every kind of job; a union of tagged Structs (add new kinds here).
Job = Forward

_decoder = msgspec.json.Decoder(Job)


def job_decoder() -> msgspec.json.Decoder[Job]:
    return _decoder


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    job: Job
    state: JobState
    #: Attempts started so far (a claim starts one).
    attempts: int
    #: When a pending job is due, or when a running job's lease ends (epoch seconds).
    run_at: float
    created_at: float
    updated_at: float
    #: The last failure, or what a completed job reported.
    message: str = ""


class JobQueue(ABC):
    """A durable queue of jobs. All methods are safe to call concurrently."""

    @abstractmethod
    async def enqueue(self, job: Job, *, run_at: float | None = None) -> str:
        """Add a pending job, due at ``run_at`` (default now); returns its id."""

    @abstractmethod
    async def claim(self, lease: float) -> JobRecord | None:
        """Take the next due job (pending and due, or running with its lease run out),
        mark it running for ``lease`` seconds and count the attempt; None when none is due."""

    @abstractmethod
    async def complete(self, job_id: str, attempt: int, message: str = "") -> bool:
        """Mark the job done; False (and no change) if ``attempt`` is no longer its
        current attempt (its lease ran out and another worker took it)."""

    @abstractmethod
    async def fail(self, job_id: str, attempt: int, error: str, retry_at: float | None) -> bool:
        """Record a failed attempt: pending again at ``retry_at``, or dead when None.
        False (and no change) if ``attempt`` is no longer the job's current attempt."""

    @abstractmethod
    async def get(self, job_id: str) -> JobRecord | None:
        """One job, or None."""

    @abstractmethod
    async def list(self, state: JobState | None = None, limit: int = 1000) -> list[JobRecord]:
        """Jobs (in one state, or all), oldest first."""

    @abstractmethod
    async def retry(self, job_id: str) -> bool:
        """Make a dead job pending and due now, with its attempts reset; False if the
        job is not dead."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
