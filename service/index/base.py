"""The Index interface: what is stored, where, and its metadata.

Writes are two-phase, so that no committed row ever points at a missing blob:

1. :meth:`Index.claim` records the intent to store a SOP Instance UID at a blob key.
   Only one upload of a given instance holds the claim at a time.
2. The caller writes and commits the blob.
3. :meth:`Index.commit` inserts (or replaces) the instance row and drops the claim in
   one transaction; :meth:`Index.release` drops the claim after a failure.

A crash between 1 and 3 leaves a claim; :meth:`Index.stale_claims` lists them so that
start-up recovery can remove blobs that no row refers to. Implementations: ``sqlite``
(embedded default) and ``dynamodb`` (shared by replicas). Every row is scoped by a store name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import msgspec

from service.core.search import Query, SearchPage

__all__ = ["Claim", "Claimed", "Index", "InstanceRecord", "InstanceRef"]


class InstanceRef(msgspec.Struct, frozen=True, kw_only=True):
    """Enough to locate and stream one stored instance."""

    store: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    size: int
    sha256: str


class InstanceRecord(InstanceRef, frozen=True, kw_only=True):
    """A stored instance with what ingest computed for search and retrieval."""

    #: Index attributes (keyword -> DICOM string value), for search.
    attributes: dict[str, str]
    #: The instance's DICOM JSON object (UTF-8), BulkDataURIs relative to a placeholder.
    metadata: bytes
    #: Study- and series-level attributes (DICOM JSON objects), for QIDO-RS answers.
    study_document: bytes = b"{}"
    series_document: bytes = b"{}"
    #: Where pixel data and frames sit in the blob (JSON), for frame retrieval.
    layout: bytes = b""
    stored_at: float = 0.0


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    store: str
    sop_uid: str
    blob_key: str
    owner: str
    claimed_at: float


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    """A claim taken by :meth:`Index.claim_instance`."""

    #: The instance committed under the claimed SOP Instance UID when the claim was taken.
    existing: InstanceRef | None
    #: The blob key recorded with the claim.
    blob_key: str


class Index(ABC):
    """Index of stored instances. All methods are safe to call concurrently."""

    async def claim_instance(
        self,
        store: str,
        sop_uid: str,
        owner: str,
        key_for: Callable[[InstanceRef | None], str],
    ) -> Claimed | None:
        """Claim ``sop_uid`` for an upload, knowing what is stored under it.

        ``key_for(existing)`` chooses the blob key from the committed instance (None if
        there is none). Returns None if another upload holds the claim, or if the
        instance changed while the claim was taken (try again later). This generic
        version takes three steps (find, claim, find again); an index that can do it in
        one transaction overrides it.
        """
        existing = await self.find(store, sop_uid)
        key = key_for(existing)
        if not await self.claim(store, sop_uid, key, owner):
            return None
        if await self.find(store, sop_uid) != existing:
            await self.release(store, sop_uid, owner)
            return None
        return Claimed(existing=existing, blob_key=key)

    @abstractmethod
    async def claim(self, store: str, sop_uid: str, blob_key: str, owner: str) -> bool:
        """Claim ``sop_uid`` for an upload; False if another upload holds it."""

    @abstractmethod
    async def release(self, store: str, sop_uid: str, owner: str) -> None:
        """Drop ``owner``'s claim (after a failed or redundant upload)."""

    @abstractmethod
    async def commit(self, record: InstanceRecord, owner: str) -> None:
        """Insert or replace the instance row and drop ``owner``'s claim, atomically."""

    @abstractmethod
    async def find(self, store: str, sop_uid: str) -> InstanceRef | None:
        """The committed instance with this SOP Instance UID, in any study."""

    @abstractmethod
    async def instances(
        self,
        store: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[InstanceRef]:
        """Committed instances of a study, series or one instance, in a stable order
        (series, then Instance Number, then SOP Instance UID)."""

    @abstractmethod
    async def metadata(
        self,
        store: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[tuple[InstanceRef, bytes]]:
        """Like :meth:`instances`, with each instance's DICOM JSON document."""

    @abstractmethod
    async def revision(
        self, store: str, study_uid: str, series_uid: str | None = None
    ) -> int | None:
        """A number that grows each time an instance of the study (or of the series) is
        stored, replaced or moved away; ``None`` when the study (series) has no instance.
        Cached documents built from a study or series (metadata, ETags) are keyed by it."""

    @abstractmethod
    async def layouts(
        self,
        store: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[tuple[InstanceRef, bytes]]:
        """Like :meth:`instances`, with each instance's layout document (pixel data
        location and frame table; empty when it has no pixel data)."""

    @abstractmethod
    async def search(self, store: str, query: Query) -> SearchPage:
        """One page of committed studies, series or instances matching ``query``, in a
        stable order (by UID: study, then series number and UID, then instance number
        and UID), with each hit's level documents and counts."""

    @abstractmethod
    async def stale_claims(self, older_than: float) -> list[Claim]:
        """Claims taken before ``older_than`` (epoch seconds), in every store."""

    @abstractmethod
    async def check(self) -> None:
        """Raise :class:`service.errors.BackendUnavailable` when the index is not usable."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
