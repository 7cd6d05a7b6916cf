"""Backends the contract suites run against. The AWS backends join these lists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
import pytest

from service.index.base import Index
from service.index.dynamodb import DynamoDBIndex
from service.index.dynamodb_schema import create_table
from service.index.dynamodb_table import make_client
from service.index.sqlite import SqliteIndex
from service.storage.base import BlobStore
from service.storage.local import LocalBlobStore
from tests.aws import MotoServer, unique_name


@pytest.fixture(params=["local"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        store = LocalBlobStore(tmp_path / "blobs")
        await store.open()
        yield store
        await store.close()


async def dynamodb_index(moto: MotoServer, blobs: BlobStore, **kwargs: int) -> DynamoDBIndex:
    """A DynamoDB index on a fresh table of the moto server."""
    name = unique_name("index")
    client = make_client("us-east-1", moto.endpoint)
    await anyio.to_thread.run_sync(create_table, client, name)
    client.close()
    idx = DynamoDBIndex(name, blobs=blobs, endpoint_url=moto.endpoint, **kwargs)
    await idx.open()
    return idx


@pytest.fixture(params=["sqlite", "dynamodb"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Index]:
    idx: Index
    if request.param == "sqlite":
        sqlite = SqliteIndex(tmp_path / "index.sqlite")
        await sqlite.open()
        idx = sqlite
    else:
        blobs = LocalBlobStore(tmp_path / "blobs")
        await blobs.open()
        idx = await dynamodb_index(request.getfixturevalue("moto"), blobs)
    yield idx
    await idx.close()
