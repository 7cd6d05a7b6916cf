"""C-GET and C-MOVE (PS3.4 C.4.2, C.4.3): which stored instances an identifier names,
and each one loaded for sending.

Retrieval is by unique keys, as the hierarchical model defines it: StudyInstanceUID at
STUDY level, plus SeriesInstanceUID at SERIES level, plus SOPInstanceUID (one or a list)
at IMAGE level. The instances are read from storage and decoded with pydicom for
pynetdicom to send: values are kept, the encoding is the negotiated transfer syntax's
(the stored one when the peer accepts it).
"""

from __future__ import annotations

from io import BytesIO

import anyio.to_thread
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from service.dicom.uid import is_valid_uid
from service.index.base import Index, InstanceRef
from service.storage.base import BlobStore

__all__ = ["RetrieveService"]


def _uids(identifier: Dataset, keyword: str) -> list[str]:
    value = identifier.get(keyword)
    if value in (None, ""):
        return []
    values = [str(v).strip() for v in (value if isinstance(value, (list, MultiValue)) else [value])]
    values = [v for u in values for v in u.split("\\") if v]
    for uid in values:
        if not is_valid_uid(uid):
            raise ValueError(f"{keyword} {uid[:40]!r} is not a valid UID")
    return values


class RetrieveService:
    def __init__(self, index: Index, storage: BlobStore, *, store: str) -> None:
        self.index = index
        self.storage = storage
        self.store = store

    async def instances(self, identifier: Dataset) -> list[InstanceRef]:
        """The stored instances the identifier's unique keys name; ValueError when the
        keys its level needs are missing or malformed."""
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        needs = {"STUDY": 1, "SERIES": 2, "IMAGE": 3}.get(level)
        if needs is None:
            raise ValueError(f"QueryRetrieveLevel {level!r} cannot be retrieved")
        studies = _uids(identifier, "StudyInstanceUID")
        series = _uids(identifier, "SeriesInstanceUID") if needs >= 2 else []
        sops = set(_uids(identifier, "SOPInstanceUID")) if needs == 3 else set()
        if not studies or (needs >= 2 and len(series) != 1) or (needs == 3 and not sops):
            raise ValueError(f"{level} level needs its unique keys")
        if needs >= 2 and len(studies) != 1:
            raise ValueError("one StudyInstanceUID below STUDY level")
        found: list[InstanceRef] = []
        for study in studies:
            refs = await self.index.instances(self.store, study, series[0] if series else None)
            found += [r for r in refs if not sops or r.sop_uid in sops]
        return found

    async def load(self, ref: InstanceRef) -> Dataset:
        data = b"".join([chunk async for chunk in self.storage.read(ref.blob_key)])
        return await anyio.to_thread.run_sync(lambda: dcmread(BytesIO(data)))
