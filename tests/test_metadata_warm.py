"""Warming builds a study's documents and its series' documents from one read of the
study, and they are the documents a request would have built."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.core.metadata import MetadataDocuments
from service.index.base import InstanceRef
from service.storage.local import LocalBlobStore

BASE = "http://example/dicom-web"
STUDY = "1.2.3"


def _ref(series: str, sop: str) -> InstanceRef:
    return InstanceRef(
        store="default",
        study_uid=STUDY,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        transfer_syntax="1.2.840.10008.1.2.1",
        blob_key=f"default/{sop}.dcm",
        size=1,
        sha256="0" * 64,
    )


class _Index:
    """Two series, three instances; counts the reads of instance documents."""

    def __init__(self) -> None:
        self.rows = [
            (_ref("1.2.3.1", "1.2.3.1.1"), b'{"00080018":{"vr":"UI","Value":["1.2.3.1.1"]}}'),
            (_ref("1.2.3.1", "1.2.3.1.2"), b'{"00080018":{"vr":"UI","Value":["1.2.3.1.2"]}}'),
            (_ref("1.2.3.2", "1.2.3.2.1"), b'{"00080018":{"vr":"UI","Value":["1.2.3.2.1"]}}'),
        ]
        self.study_revisions = [7]  # what successive study revision reads return
        self.metadata_reads = 0

    async def revision(self, store: str, study: str, series: str | None = None) -> int | None:
        if series is not None:
            return {"1.2.3.1": 5, "1.2.3.2": 6}[series]
        if len(self.study_revisions) > 1:
            return self.study_revisions.pop(0)
        return self.study_revisions[0]

    async def metadata(
        self, store: str, study: str, series: str | None = None
    ) -> list[tuple[InstanceRef, bytes]]:
        self.metadata_reads += 1
        return [row for row in self.rows if series in (None, row[0].series_uid)]


async def _documents(tmp_path: Path, index: _Index) -> MetadataDocuments:
    storage = LocalBlobStore(tmp_path / "blobs")
    await storage.open()
    return MetadataDocuments(
        storage,
        index,  # type: ignore[arg-type]
        store="default",
        memory_bytes=1 << 20,
        warm_delay=1,
    )


async def test_warming_reads_the_study_once_and_builds_what_a_request_would(
    tmp_path: Path,
) -> None:
    index = _Index()
    docs = await _documents(tmp_path, index)
    await docs._warm(STUDY, BASE)
    assert index.metadata_reads == 1
    cached = sorted(p.name.split(".")[0] for p in (tmp_path / "blobs").rglob("*.json.gz"))
    assert cached == ["1", "1", "study"]  # series 1.2.3.1, 1.2.3.2 and the study

    warmed = {
        series: await docs.document(STUDY, series, BASE) for series in (None, "1.2.3.1", "1.2.3.2")
    }
    assert index.metadata_reads == 1  # all three served from what warming kept
    assert [warmed[s].revision for s in warmed] == [7, 5, 6]

    # A second service with the same storage and no memory loads them from storage;
    # with the storage cleared as well, it builds them the way a request does.
    again = await _documents(tmp_path, index)
    for series, doc in warmed.items():
        assert (await again.document(STUDY, series, BASE)).gzipped == doc.gzipped
    for path in (tmp_path / "blobs").rglob("*.json.gz"):
        path.unlink()
    built = await _documents(tmp_path, index)
    for series, doc in warmed.items():
        fresh = await built.document(STUDY, series, BASE)
        assert (fresh.revision, fresh.json()) == (doc.revision, doc.json())
    sops = [o["00080018"]["Value"][0] for o in json.loads(gzip.decompress(warmed[None].gzipped))]
    assert sops == ["1.2.3.1.1", "1.2.3.1.2", "1.2.3.2.1"]


async def test_a_study_stored_to_while_it_is_read_is_not_kept(tmp_path: Path) -> None:
    index = _Index()
    index.study_revisions = [7, 8]  # an instance arrived between the two reads
    docs = await _documents(tmp_path, index)
    await docs._warm(STUDY, BASE)
    assert not list((tmp_path / "blobs").rglob("*.json.gz"))
    assert not docs.memory.items


class _Requests:
    """Stands in for the app's request counter: busy until told otherwise."""

    serving = True

    def busy(self) -> bool:
        return self.serving


@contextlib.asynccontextmanager
async def _warmer(
    tmp_path: Path, index: _Index, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[MetadataDocuments, _Requests]]:
    """A running warmer, quick to poll, whose process is serving requests."""
    monkeypatch.setattr("service.core.metadata.IDLE_POLL_SECONDS", 0.01)
    docs = await _documents(tmp_path, index)
    docs.warm_delay = 0.05
    requests = _Requests()
    docs.busy = requests.busy
    task = asyncio.create_task(docs.warm_forever())
    try:
        yield docs, requests
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_warming_waits_for_a_pause_in_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _Index()
    async with _warmer(tmp_path, index, monkeypatch) as (docs, requests):
        docs.touch(STUDY, BASE)
        await asyncio.sleep(0.3)  # long past the study's quiet time
        assert index.metadata_reads == 0  # requests are being served: not yet
        requests.serving = False
        # The warmer caches the study's documents one after the other: wait for all.
        for _ in range(200):
            if len(docs.memory.items) == 3:
                break
            await asyncio.sleep(0.01)
        assert index.metadata_reads == 1 and len(docs.memory.items) == 3


async def test_a_study_touched_while_the_warmer_waits_is_not_warmed_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _Index()
    async with _warmer(tmp_path, index, monkeypatch) as (docs, requests):
        docs.touch(STUDY, BASE)
        await asyncio.sleep(0.1)  # due, and waiting for a pause
        docs.warm_delay = 0.5
        docs.touch(STUDY, BASE)  # a new instance: quiet again only in 0.5 s
        requests.serving = False
        await asyncio.sleep(0.2)
        assert index.metadata_reads == 0
        await asyncio.sleep(0.6)
        assert index.metadata_reads == 1
