"""Backends the contract suites run against. The AWS backends join these lists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
import boto3
import pytest

from service.index.base import Index
from service.index.dynamodb import DynamoDBIndex
from service.index.dynamodb_schema import create_table
from service.index.dynamodb_table import make_client
from service.index.sqlite import SqliteIndex
from service.jobs.base import JobQueue
from service.jobs.sqlite import SqliteJobQueue
from service.storage.base import BlobStore
from service.storage.local import LocalBlobStore
from tests.aws import MotoServer, unique_name

# The smallest part S3 accepts, so that the suite's multi-megabyte blobs cross parts.
S3_TEST_PART_SIZE = 5 * 1024 * 1024


@pytest.fixture(params=["local", "s3"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        store: BlobStore = LocalBlobStore(tmp_path / "blobs")
        await store.open()
    else:
        from service.storage.s3 import S3BlobStore

        moto: MotoServer = request.getfixturevalue("moto")
        bucket = unique_name("contract")
        boto3.client("s3", endpoint_url=moto.endpoint).create_bucket(Bucket=bucket)
        s3 = S3BlobStore.from_url(
            f"s3://{bucket}/some/prefix",
            region="us-east-1",
            endpoint_url=moto.endpoint,
            part_size=S3_TEST_PART_SIZE,
            upload_concurrency=2,
        )
        await s3.open()
        store = s3
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


@pytest.fixture(params=["sqlite", "dynamodb"])
async def job_queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobQueue]:
    queue: JobQueue
    if request.param == "sqlite":
        sqlite = SqliteJobQueue(tmp_path / "jobs.sqlite")
        await sqlite.open()
        queue = sqlite
    else:
        from service.jobs.dynamodb import DynamoDBJobQueue, create_jobs_table

        moto: MotoServer = request.getfixturevalue("moto")
        name = unique_name("jobs")
        client = make_client("us-east-1", moto.endpoint)
        await anyio.to_thread.run_sync(create_jobs_table, client, name)
        client.close()
        shared = DynamoDBJobQueue(name, region="us-east-1", endpoint_url=moto.endpoint)
        await shared.open()
        queue = shared
    yield queue
    await queue.close()
