"""The store use case without HTTP: failures part-way, races, crash recovery."""

from __future__ import annotations

import asyncio
import hashlib
import io
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pydicom
import pytest

from service.core.keys import instance_key
from service.core.stow import StowService
from service.dicom import reasons
from service.index.base import InstanceRecord
from service.index.sqlite import SqliteIndex
from service.storage.base import BlobStore, BlobWriter
from service.storage.local import LocalBlobStore
from tests.dicomgen import make_instance, new_uid
from tests.helpers import multipart

BOUNDARY = "test-boundary-7f3a"
T = TypeVar("T")


class FailingWriter(BlobWriter):
    def __init__(self, inner: BlobWriter, fail_on: str) -> None:
        self.inner, self.fail_on = inner, fail_on

    async def write(self, data: bytes) -> None:
        if self.fail_on in ("write", "write and abort"):
            raise OSError(5, "Input/output error")
        await self.inner.write(data)

    async def commit(self) -> None:
        if self.fail_on == "commit":
            raise OSError(5, "Input/output error")
        await self.inner.commit()

    async def abort(self) -> None:
        await self.inner.abort()
        if self.fail_on == "write and abort":
            raise OSError(5, "Input/output error while aborting")


class FaultyStore(LocalBlobStore):
    """Local storage whose writers fail at a chosen step."""

    fail_on = "write"

    async def open_writer(self, key: str, *, durable: bool = True) -> BlobWriter:
        return FailingWriter(await super().open_writer(key, durable=durable), self.fail_on)


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def make_service(
    tmp_path: Path, storage: BlobStore | None = None
) -> tuple[StowService, SqliteIndex]:
    store = storage or LocalBlobStore(tmp_path / "blobs")
    assert isinstance(store, LocalBlobStore)
    await store.open()
    index = SqliteIndex(tmp_path / "index.sqlite")
    await index.open()
    service = StowService(
        store,
        index,
        store="default",
        max_request_bytes=1 << 30,
        header_memory_bytes=1 << 20,
        duplicates="reject",
    )
    return service, index


@pytest.mark.parametrize("fail_on", ["write", "commit", "write and abort"])
async def test_storage_failure_leaves_no_row_and_no_file(tmp_path: Path, fail_on: str) -> None:
    store = FaultyStore(tmp_path / "blobs")
    store.fail_on = fail_on
    service, index = await make_service(tmp_path, store)
    study = new_uid()
    result = await service.store_body(
        chunks(multipart(make_instance(study=study, rows=256, cols=256))), boundary=BOUNDARY
    )
    [outcome] = result.outcomes
    assert not outcome.stored
    assert outcome.reason == reasons.PROCESSING_FAILURE
    assert "Input/output error" in (outcome.message or "")
    assert await index.instances("default", study) == []
    assert await index.stale_claims(time.time() + 1) == []
    assert files_under(tmp_path / "blobs") == []
    await index.close()


async def test_index_failure_after_blob_commit_removes_blob(tmp_path: Path) -> None:
    service, index = await make_service(tmp_path)

    async def broken_commit(*_: object) -> None:
        raise RuntimeError("index went away")

    index.commit = broken_commit  # type: ignore[method-assign]
    result = await service.store_body(chunks(multipart(make_instance())), boundary=BOUNDARY)
    [outcome] = result.outcomes
    assert outcome.reason == reasons.PROCESSING_FAILURE
    assert files_under(tmp_path / "blobs") == []
    assert await index.stale_claims(time.time() + 1) == []
    await index.close()


async def test_a_request_cancelled_during_its_index_commit_keeps_row_and_blob_together(
    tmp_path: Path,
) -> None:
    """Cancelled while its row is being written (the writer thread does not stop), the
    upload waits for the row and keeps the blob the row names."""
    service, index = await make_service(tmp_path)
    writing = threading.Event()
    index_write = index._write

    async def slow_write(fn: Callable[[sqlite3.Connection], T]) -> T:
        def slowly(conn: sqlite3.Connection) -> T:
            writing.set()
            time.sleep(0.3)
            return fn(conn)

        return await index_write(slowly)

    async def commit(record: InstanceRecord, owner: str) -> None:
        index._write = slow_write  # type: ignore[method-assign]
        await SqliteIndex.commit(index, record, owner)

    index.commit = commit  # type: ignore[method-assign]
    sop = new_uid()
    upload = asyncio.ensure_future(
        service.store_body(chunks(multipart(make_instance(sop=sop))), boundary=BOUNDARY)
    )
    await asyncio.to_thread(writing.wait, 10)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    ref = await index.find("default", sop)
    assert ref is not None  # the row committed although its caller was cancelled
    assert await service.storage.exists(ref.blob_key)
    await index.close()


async def test_concurrent_conflicting_uploads_store_exactly_one(tmp_path: Path) -> None:
    service, index = await make_service(tmp_path)
    study, series, sop = new_uid(), new_uid(), new_uid()
    versions = [
        make_instance(study=study, series=series, sop=sop, rows=64, cols=64, pixel_seed=s)
        for s in range(4)
    ]
    results = await asyncio.gather(
        *(service.store_body(chunks(multipart(v), 512), boundary=BOUNDARY) for v in versions)
    )
    outcomes = [r.outcomes[0] for r in results]
    assert sum(o.stored for o in outcomes) == 1
    assert {o.reason for o in outcomes if not o.stored} == {reasons.DUPLICATE_CONFLICT}
    ref = await index.find("default", sop)
    assert ref is not None
    stored = (tmp_path / "blobs" / ref.blob_key).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == ref.sha256
    assert stored in versions
    await index.close()


async def test_recovery_removes_blob_of_a_dead_upload(tmp_path: Path) -> None:
    service, index = await make_service(tmp_path)
    # a committed instance, and a crash after its claim and blob but before the row
    ok = await service.store_body(chunks(multipart(make_instance())), boundary=BOUNDARY)
    assert ok.outcomes[0].stored
    key = instance_key("default", "1.2", "1.3", "1.4")
    assert await index.claim("default", "1.4", key, "dead-process")
    writer = await service.storage.open_writer(key)
    await writer.write(b"orphan")
    await writer.commit()
    assert await service.storage.exists(key)
    cleared = await service.recover(older_than=time.time() + 1)
    assert cleared == 1
    assert not await service.storage.exists(key)
    assert len(files_under(tmp_path / "blobs")) == 1  # the committed one stays
    assert await index.stale_claims(time.time() + 1) == []
    await index.close()


async def test_large_header_spills_and_still_stores(tmp_path: Path) -> None:
    service, index = await make_service(tmp_path)
    service.header_memory_bytes = 4096
    from pydicom.uid import UID

    from tests.dicomgen import encode, make_dataset

    ds = make_dataset()
    ds.EncapsulatedDocument = b"%PDF" + b"x" * 200_000  # bulk data before Pixel Data
    ds.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    data = encode(ds)
    result = await service.store_body(chunks(multipart(data), 8192), boundary=BOUNDARY)
    assert result.outcomes[0].stored, result.outcomes[0].message
    ref = await index.find("default", ds.SOPInstanceUID)
    assert ref is not None
    assert (tmp_path / "blobs" / ref.blob_key).read_bytes() == data
    [(_, doc)] = await index.metadata("default", ds.StudyInstanceUID)
    assert b'"00420011":{"vr":"OB","BulkDataURI":"{+bulk}/bulkdata/00420011"}' in doc
    await index.close()


async def test_store_instance_runs_the_stow_pipeline(tmp_path: Path) -> None:
    service, index = await make_service(tmp_path)
    data = make_instance()
    ds = pydicom.dcmread(io.BytesIO(data))
    expected = (ds.SOPClassUID, ds.SOPInstanceUID)
    outcome = await service.store_instance(chunks(data, 300), expected=expected)
    assert outcome.stored and outcome.sop_instance_uid == ds.SOPInstanceUID
    ref = await index.find("default", ds.SOPInstanceUID)
    assert ref is not None and (tmp_path / "blobs" / ref.blob_key).read_bytes() == data
    # identical again: success; announced as another instance: 0xA900, nothing stored
    assert (await service.store_instance(chunks(data), expected=expected)).stored
    other = make_instance()
    wrong = await service.store_instance(chunks(other), expected=expected)
    assert (wrong.stored, wrong.reason) == (False, reasons.DATASET_MISMATCH)
    service.max_request_bytes = 100
    big = await service.store_instance(chunks(make_instance()))
    assert (big.stored, big.reason) == (False, reasons.OUT_OF_RESOURCES)
    assert len(files_under(tmp_path / "blobs")) == 1
    assert await index.stale_claims(time.time() + 1) == []
    await index.close()


async def test_recovery_keeps_claims_of_live_processes(tmp_path: Path) -> None:
    service, index = await make_service(tmp_path)
    assert await index.claim("default", "1.5", "default/live.dcm", "aaaa-1")
    assert await index.claim("default", "1.6", "default/dead.dcm", "bbbb-1")
    cleared = await service.recover(time.time() + 1, alive=lambda token: token == "aaaa")
    assert cleared == 1
    assert [c.owner for c in await index.stale_claims(time.time() + 1)] == ["aaaa-1"]
    await index.close()
