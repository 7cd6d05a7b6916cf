"""S3BlobStore against a moto server over HTTP: what the contract suite cannot see.

Each test inspects the bucket directly with its own boto3 client: how an object was
uploaded (one PUT or parts), its checksum and encryption, and what multipart uploads
are left over.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import boto3
import pytest

from service.errors import BackendUnavailable
from service.storage.base import BlobNotFound
from service.storage.s3 import S3BlobStore, parse_s3_url
from tests.aws import MotoServer, unique_name
from tests.server import free_port

PART = 5 * 1024 * 1024
PREFIX = "dicomweb/prefix"

StoreFactory = Callable[..., Awaitable[S3BlobStore]]


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    return boto3.client("s3", endpoint_url=moto.endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_name("s3test")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def make_store(moto: MotoServer, bucket: str) -> AsyncIterator[StoreFactory]:
    stores: list[S3BlobStore] = []

    async def make(**kwargs: Any) -> S3BlobStore:
        url = kwargs.pop("url", f"s3://{bucket}/{PREFIX}")
        kwargs.setdefault("endpoint_url", moto.endpoint)
        kwargs.setdefault("part_size", PART)
        store = S3BlobStore.from_url(url, region="us-east-1", **kwargs)
        await store.open()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


async def put(store: S3BlobStore, key: str, data: bytes, chunk: int = 700_000) -> None:
    writer = await store.open_writer(key)
    for at in range(0, len(data), chunk):
        await writer.write(data[at : at + chunk])
    await writer.commit()


def uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


async def test_large_blob_goes_up_in_parts_with_checksums(
    make_store: StoreFactory, s3: Any, bucket: str
) -> None:
    store = await make_store(upload_concurrency=2)
    data = os.urandom(2 * PART + 12345)
    writer = await store.open_writer("a/b.dcm")
    await writer.write(data[: PART + 1])
    # The first part left as soon as it filled; nothing is visible at the key yet.
    assert [u["Key"] for u in uploads(s3, bucket)] == [f"{PREFIX}/a/b.dcm"]
    assert uploads(s3, bucket)[0]["ChecksumAlgorithm"] == "SHA256"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    await writer.write(data[PART + 1 :])
    await writer.commit()
    head = s3.head_object(Bucket=bucket, Key=f"{PREFIX}/a/b.dcm", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"')
    assert head["ContentLength"] == len(data)
    assert head["ChecksumSHA256"]
    assert s3.head_object(Bucket=bucket, Key=f"{PREFIX}/a/b.dcm", PartNumber=1)["PartsCount"] == 3
    attributes = s3.get_object_attributes(
        Bucket=bucket, Key=f"{PREFIX}/a/b.dcm", ObjectAttributes=["Checksum"]
    )
    assert attributes["Checksum"]["ChecksumType"] == "COMPOSITE"
    assert uploads(s3, bucket) == []
    assert s3.get_object(Bucket=bucket, Key=f"{PREFIX}/a/b.dcm")["Body"].read() == data


@pytest.mark.parametrize("size", [0, 1, PART - 1])
async def test_blob_below_part_size_is_one_put_with_its_sha256(
    make_store: StoreFactory, s3: Any, bucket: str, size: int
) -> None:
    store = await make_store()
    data = os.urandom(size)
    await put(store, "small.dcm", data)
    head = s3.head_object(Bucket=bucket, Key=f"{PREFIX}/small.dcm", ChecksumMode="ENABLED")
    assert "-" not in head["ETag"]
    assert head["ChecksumSHA256"] == sha256_b64(data)
    assert head["ContentType"] == "application/dicom"
    assert uploads(s3, bucket) == []


async def test_exactly_one_part_is_a_one_part_upload(
    make_store: StoreFactory, s3: Any, bucket: str
) -> None:
    store = await make_store()
    data = os.urandom(PART)
    await put(store, "one.dcm", data)
    head = s3.head_object(Bucket=bucket, Key=f"{PREFIX}/one.dcm")
    assert head["ETag"].endswith('-1"')
    assert s3.get_object(Bucket=bucket, Key=f"{PREFIX}/one.dcm")["Body"].read() == data


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, {"ServerSideEncryption": "AES256"}),
        ({"sse": "AES256"}, {"ServerSideEncryption": "AES256"}),
        (
            {"sse": "aws:kms", "kms_key_id": "alias/dicom"},
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/dicom"},
        ),
        ({"sse": "none"}, {}),
    ],
)
@pytest.mark.parametrize("size", [100, PART + 100])
async def test_server_side_encryption_follows_settings(
    make_store: StoreFactory,
    s3: Any,
    bucket: str,
    settings: dict[str, str],
    expected: dict[str, str],
    size: int,
) -> None:
    store = await make_store(**settings)
    await put(store, "enc.dcm", os.urandom(size))
    head = s3.head_object(Bucket=bucket, Key=f"{PREFIX}/enc.dcm")
    got = {k: head[k] for k in ("ServerSideEncryption", "SSEKMSKeyId") if k in head}
    assert got == expected


async def test_abort_removes_the_multipart_upload(
    make_store: StoreFactory, s3: Any, bucket: str
) -> None:
    store = await make_store(upload_concurrency=3)
    writer = await store.open_writer("aborted.dcm")
    await writer.write(os.urandom(3 * PART + 10))
    assert len(uploads(s3, bucket)) == 1
    await writer.abort()
    await writer.abort()
    assert uploads(s3, bucket) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


async def test_parts_in_flight_are_bounded_and_memory_too(
    make_store: StoreFactory, s3: Any, bucket: str
) -> None:
    """A writer never holds more than concurrency + 1 parts, however much it is fed."""
    store = await make_store(upload_concurrency=2)
    writer = await store.open_writer("bounded.dcm")
    data = os.urandom(7 * PART + 3)
    for at in range(0, len(data), PART // 2):
        await writer.write(data[at : at + PART // 2])
        held = len(writer._in_flight) * PART + len(writer._buffer)  # type: ignore[attr-defined]
        assert held <= 3 * PART
    await writer.commit()
    assert s3.head_object(Bucket=bucket, Key=f"{PREFIX}/bounded.dcm")["ETag"].endswith('-8"')
    assert s3.get_object(Bucket=bucket, Key=f"{PREFIX}/bounded.dcm")["Body"].read() == data


async def test_keys_without_prefix(make_store: StoreFactory, s3: Any, bucket: str) -> None:
    store = await make_store(url=f"s3://{bucket}")
    await put(store, "default/studies/1/x.dcm", b"x")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["default/studies/1/x.dcm"]


async def test_missing_bucket_is_backend_unavailable_naming_it(
    make_store: StoreFactory, s3: Any
) -> None:
    missing = unique_name("missing")
    store = await make_store(url=f"s3://{missing}/p")
    with pytest.raises(BackendUnavailable, match=f"S3 bucket '{missing}' does not exist"):
        await store.check()
    writer = await store.open_writer("small.dcm")
    await writer.write(b"small")  # buffered until commit
    with pytest.raises(BackendUnavailable, match=missing):
        await writer.commit()
    await writer.abort()
    writer = await store.open_writer("large.dcm")
    with pytest.raises(BackendUnavailable, match=missing):
        await writer.write(os.urandom(PART + 10))  # the first part starts the upload
    await writer.abort()
    with pytest.raises(BackendUnavailable, match=missing):
        [chunk async for chunk in store.read("x.dcm")]
    with pytest.raises(BlobNotFound):
        # a missing object in a bucket that exists is not a backend fault
        [chunk async for chunk in (await make_store()).read("x.dcm")]


async def test_unreachable_endpoint_is_backend_unavailable(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    dead = f"http://127.0.0.1:{free_port()}"
    store = await make_store(endpoint_url=dead)
    with pytest.raises(BackendUnavailable, match=f"{dead} cannot be reached"):
        await store.check()
    with pytest.raises(BackendUnavailable, match="cannot be reached"):
        await store.exists("x.dcm")


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://b", "b", ""),
        ("s3://b/", "b", ""),
        ("s3://b/p", "b", "p"),
        ("s3://b/p/q/", "b", "p/q"),
    ],
)
def test_parse_url(url: str, bucket: str, prefix: str) -> None:
    location = parse_s3_url(url)
    assert (location.bucket, location.prefix) == (bucket, prefix)
    assert location.key("k/x.dcm") == (f"{prefix}/k/x.dcm" if prefix else "k/x.dcm")


@pytest.mark.parametrize("url", ["s3://", "s3:///p", "s3://b/../x", "s3://b/a//b", "file:///x"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_s3_url(url)


def test_boto3_is_imported_only_when_s3_is_chosen() -> None:
    code = (
        "import sys, service.app, service.context\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("AccessDenied", "access to S3 bucket 'b' is denied (AccessDenied): check the IAM policy"),
        ("403", "access to S3 bucket 'b' is denied (403)"),
        ("NoSuchBucket", "S3 bucket 'b' does not exist"),
        ("SlowDown", "S3 bucket 'b': An error occurred (SlowDown)"),
    ],
)
def test_error_messages_name_bucket_and_problem(code: str, words: str) -> None:
    import botocore.exceptions

    from service.storage.s3 import describe_error

    exc = botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "x"}}, "HeadBucket")
    assert words in describe_error("b", "", exc)
