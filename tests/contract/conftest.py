"""Backends the contract suites run against. The AWS backends join these lists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.index.base import Index
from service.index.sqlite import SqliteIndex
from service.jobs.base import JobQueue
from service.jobs.sqlite import SqliteJobQueue
from service.storage.base import BlobStore
from service.storage.local import LocalBlobStore


@pytest.fixture(params=["local"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        store = LocalBlobStore(tmp_path / "blobs")
        await store.open()
        yield store
        await store.close()


@pytest.fixture(params=["sqlite"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Index]:
    if request.param == "sqlite":
        idx = SqliteIndex(tmp_path / "index.sqlite")
        await idx.open()
        yield idx
        await idx.close()


@pytest.fixture(params=["sqlite"])
async def job_queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobQueue]:
    if request.param == "sqlite":
        queue = SqliteJobQueue(tmp_path / "jobs.sqlite")
        await queue.open()
        yield queue
        await queue.close()
