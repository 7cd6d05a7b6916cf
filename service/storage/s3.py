"""S3 BlobStore: streamed multipart uploads, ranged GETs, SHA-256 checked by S3.

A blob smaller than one part goes up in a single PutObject when it is committed. A
larger one becomes a multipart upload as soon as its first part fills: parts are sent
while the rest is still arriving, at most ``upload_concurrency`` at a time, and a writer
that gets ahead waits for a slot, so one upload holds at most ``upload_concurrency + 1``
parts in memory whatever its size. Every part and every single PUT carries its SHA-256
(``x-amz-checksum-sha256``), which S3 verifies before accepting the bytes. An object
appears at its key only when CompleteMultipartUpload (or the PutObject) succeeds; an
abort or any failure aborts the multipart upload, so S3 keeps no parts.

boto3 is synchronous and its clients are thread-safe: every call runs in a worker thread
(``anyio.to_thread``) under one limiter, and part uploads in a small thread pool, both
bounded, with a connection pool large enough for both. Errors from S3 or the network
become :class:`BackendUnavailable` naming the bucket and the problem.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import anyio.to_thread
import boto3
import botocore.exceptions
from botocore.config import Config

from service.errors import BackendUnavailable
from service.storage.base import BlobNotFound, BlobStore, BlobWriter, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["S3BlobStore", "S3Location", "parse_s3_url"]

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_CHUNK = 1024 * 1024
# S3 calls made from the event loop's worker threads at once (PUT, GET chunks, HEAD...).
CALL_THREADS = 16
# Part uploads of all writers at once, as a multiple of one upload's concurrency.
PART_THREADS_PER_UPLOAD = 4

# boto3 is imported only when an s3:// URL is configured, so these stay module-level.
_NETWORK_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ProxyConnectionError,
    botocore.exceptions.HTTPClientError,
)
_MISSING_BUCKET = {"NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


class S3Location:
    """The bucket and optional key prefix of an ``s3://bucket/prefix`` URL."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix

    def key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key


def parse_s3_url(url: str) -> S3Location:
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise ValueError(f"no bucket in storage URL {url!r} (expected s3://bucket/prefix)")
    if prefix:
        check_key(prefix)
    return S3Location(bucket, prefix)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def describe_error(bucket: str, endpoint: str, exc: BaseException) -> str:
    """What went wrong, in words an operator can act on."""
    code = error_code(exc)
    if code in _MISSING_BUCKET:
        return f"S3 bucket {bucket!r} does not exist (create it: python -m service init-aws)"
    if code in _DENIED:
        return f"access to S3 bucket {bucket!r} is denied ({code}): check the IAM policy"
    if isinstance(exc, _NETWORK_ERRORS):
        where = endpoint or "the AWS S3 endpoint"
        return f"S3 bucket {bucket!r}: {where} cannot be reached ({exc})"
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return f"S3 bucket {bucket!r}: no AWS credentials found"
    return f"S3 bucket {bucket!r}: {exc}"


def _sha256_b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


class _S3Writer(BlobWriter):
    """One object being written: buffered to a part, then a single PUT or a multipart."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._parts_lock = threading.Lock()
        self._in_flight: set[concurrent.futures.Future[None]] = set()
        self._next_part = 1
        self._state: Literal["open", "committing", "done"] = "open"

    async def write(self, data: bytes) -> None:
        if self._state != "open":
            raise RuntimeError("write after commit or abort")
        self._buffer += data
        part_size = self._store.part_size
        while len(self._buffer) >= part_size:
            with memoryview(self._buffer) as view:  # one copy, not two
                part = bytes(view[:part_size])
            del self._buffer[:part_size]
            await self._send_part(part)

    async def _send_part(self, part: bytes) -> None:
        store = self._store
        if self._upload_id is None:
            self._upload_id = await store.call(self._create_sync)
        # Backpressure: wait (in a thread) until fewer than `concurrency` parts are in
        # flight, and surface the first failed part before sending more.
        if len(self._in_flight) >= store.upload_concurrency:
            await store.call(self._wait_for_slot)
        self._raise_failed()
        number, self._next_part = self._next_part, self._next_part + 1
        self._in_flight.add(store.part_pool.submit(self._upload_part_sync, number, part))

    def _create_sync(self) -> str:
        store = self._store
        response = store.client.create_multipart_upload(
            Bucket=store.location.bucket,
            Key=self._key,
            ChecksumAlgorithm="SHA256",
            ContentType="application/dicom",
            **store.encryption,
        )
        return response["UploadId"]

    def _upload_part_sync(self, number: int, part: bytes) -> None:
        store = self._store
        assert self._upload_id is not None
        checksum = _sha256_b64(part)
        try:
            response = store.client.upload_part(
                Bucket=store.location.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=part,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise BackendUnavailable(store.describe(exc)) from exc
        with self._parts_lock:
            self._parts.append(
                {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}
            )

    def _wait_for_slot(self) -> None:
        concurrent.futures.wait(self._in_flight, return_when=concurrent.futures.FIRST_COMPLETED)

    def _raise_failed(self) -> None:
        done = {f for f in self._in_flight if f.done()}
        self._in_flight -= done
        for future in done:
            future.result()  # re-raises a failed part's error

    async def commit(self) -> None:
        if self._state != "open":
            raise RuntimeError("commit after commit or abort")
        self._state = "committing"
        if self._upload_id is None:
            body, self._buffer = bytes(self._buffer), bytearray()
            await self._store.call(self._put_sync, body)
        else:
            if self._buffer:
                await self._send_part(bytes(self._buffer))
                self._buffer = bytearray()
            await self._store.call(self._complete_sync)
        self._state = "done"

    def _put_sync(self, body: bytes) -> None:
        store = self._store
        store.client.put_object(
            Bucket=store.location.bucket,
            Key=self._key,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_sha256_b64(body),
            ContentType="application/dicom",
            **store.encryption,
        )

    def _complete_sync(self) -> None:
        concurrent.futures.wait(self._in_flight)
        self._raise_failed()
        store = self._store
        assert self._upload_id is not None
        parts = sorted(self._parts, key=lambda p: p["PartNumber"])
        store.client.complete_multipart_upload(
            Bucket=store.location.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )

    async def abort(self) -> None:
        state, self._state = self._state, "done"
        self._buffer = bytearray()
        if self._upload_id is None or (state == "done" and not self._in_flight):
            return
        # Shielded: an interrupted request must still tell S3 to drop the parts.
        with anyio.CancelScope(shield=True):
            await self._store.call(self._abort_sync, state == "committing")

    def _abort_sync(self, after_commit: bool) -> None:
        for future in self._in_flight:
            future.cancel()
        # Parts still uploading could land after the abort and be kept: wait for them.
        concurrent.futures.wait(self._in_flight)
        self._in_flight.clear()
        upload_id, self._upload_id = self._upload_id, None
        assert upload_id is not None
        try:
            completed = self._store.abort_upload_sync(self._key, upload_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            # S3 does not answer now: the store retries the abort once it does (check(),
            # the next writer). Not raised: the caller's own cleanup must go on.
            self._store.remember_abort(self._key, upload_id, self._store.describe(exc))
            return
        if completed and after_commit:
            # CompleteMultipartUpload failed on our side but finished on S3's: the
            # commit was reported failed, so its object must not stay visible.
            self._store.client.delete_object(Bucket=self._store.location.bucket, Key=self._key)


class S3BlobStore(BlobStore):
    """Blobs as S3 objects at ``{prefix}/{key}`` in one bucket."""

    def __init__(
        self,
        location: S3Location,
        *,
        region: str,
        endpoint_url: str = "",
        part_size: int = 8 * 1024**2,
        upload_concurrency: int = 4,
        sse: Literal["AES256", "aws:kms", "none"] = "AES256",
        kms_key_id: str = "",
    ) -> None:
        self.location = location
        self.region = region
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self.upload_concurrency = upload_concurrency
        self.encryption: dict[str, Any] = {}
        if sse != "none":
            self.encryption["ServerSideEncryption"] = sse
            if sse == "aws:kms" and kms_key_id:
                self.encryption["SSEKMSKeyId"] = kms_key_id
        part_threads = PART_THREADS_PER_UPLOAD * upload_concurrency
        self.part_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=part_threads, thread_name_prefix="s3-part"
        )
        self._limiter = anyio.CapacityLimiter(CALL_THREADS)
        # Multipart uploads whose abort failed (S3 unreachable), retried by check() and
        # by the next writer; the bucket's lifecycle rule is the last resort.
        self._unaborted: list[tuple[str, str]] = []
        self._unaborted_lock = threading.Lock()
        self._pool_size = CALL_THREADS + part_threads
        self._client: S3Client | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        region: str,
        endpoint_url: str = "",
        part_size: int = 8 * 1024**2,
        upload_concurrency: int = 4,
        sse: Literal["AES256", "aws:kms", "none"] = "AES256",
        kms_key_id: str = "",
    ) -> S3BlobStore:
        return cls(
            parse_s3_url(url),
            region=region,
            endpoint_url=endpoint_url,
            part_size=part_size,
            upload_concurrency=upload_concurrency,
            sse=sse,
            kms_key_id=kms_key_id,
        )

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3BlobStore.open() was not called")
        return self._client

    async def open(self) -> None:
        """Build the client (loading botocore's models blocks, so in a thread)."""
        self._client = await anyio.to_thread.run_sync(self._make_client)

    def _make_client(self) -> S3Client:
        config = Config(
            region_name=self.region,
            # standard mode retries throttling (SlowDown, 503) and dropped connections
            # with exponential backoff and jitter; AWS_MAX_ATTEMPTS sets the attempts.
            retries={"mode": "standard"},
            max_pool_connections=self._pool_size,
            connect_timeout=10,
            read_timeout=60,
        )
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url or None, config=config
        )

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run a blocking boto3 call in a worker thread; S3 errors become 503s."""
        try:
            return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise BackendUnavailable(self.describe(exc)) from exc

    def describe(self, exc: BaseException) -> str:
        return describe_error(self.location.bucket, self.endpoint_url, exc)

    def abort_upload_sync(self, key: str, upload_id: str) -> bool:
        """Abort a multipart upload; True when S3 no longer knows it (it completed)."""
        try:
            self.client.abort_multipart_upload(
                Bucket=self.location.bucket, Key=key, UploadId=upload_id
            )
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise
            return True
        return False

    def remember_abort(self, key: str, upload_id: str, problem: str) -> None:
        log.warning("could not abort the S3 multipart upload of %s (%s); will retry", key, problem)
        with self._unaborted_lock:
            self._unaborted.append((key, upload_id))

    def _retry_aborts_sync(self) -> None:
        with self._unaborted_lock:
            pending, self._unaborted = self._unaborted, []
        for number, (key, upload_id) in enumerate(pending):
            try:
                self.abort_upload_sync(key, upload_id)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                with self._unaborted_lock:
                    self._unaborted.extend(pending[number:])
                return
            log.info("aborted the multipart upload of %s left by an earlier failure", key)

    async def _retry_aborts(self) -> None:
        if self._unaborted:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._retry_aborts_sync, limiter=self._limiter)

    async def open_writer(
        self,
        key: str,
        *,
        durable: bool = True,  # noqa: ARG002 - a completed S3 upload is always durable
    ) -> BlobWriter:
        writer = _S3Writer(self, self.location.key(key))
        await self._retry_aborts()
        return writer

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        object_key = self.location.key(key)
        if end is not None and end <= start:
            return
        # HTTP ranges are inclusive; an open end reads to the end of the object.
        byte_range = f"bytes={start}-{'' if end is None else end - 1}"

        def get() -> Any:
            try:
                return self.client.get_object(
                    Bucket=self.location.bucket, Key=object_key, Range=byte_range
                )["Body"]
            except botocore.exceptions.ClientError as exc:
                code = error_code(exc)
                if code in {"NoSuchKey", "404"}:
                    raise BlobNotFound(f"blob {key} is missing from storage") from None
                if code == "InvalidRange":  # start at or past the end: nothing to read
                    return None
                raise

        body = await self.call(get)
        if body is None:
            return
        try:
            while chunk := await self.call(body.read, READ_CHUNK):
                yield chunk
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(body.close, limiter=self._limiter)

    async def delete(self, key: str) -> None:
        object_key = self.location.key(key)
        await self.call(
            lambda: self.client.delete_object(Bucket=self.location.bucket, Key=object_key)
        )

    async def exists(self, key: str) -> bool:
        object_key = self.location.key(key)

        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.location.bucket, Key=object_key)
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                    return False
                raise
            return True

        return await self.call(head)

    async def check(self) -> None:
        await self.call(lambda: self.client.head_bucket(Bucket=self.location.bucket))
        await self._retry_aborts()

    async def close(self) -> None:
        client, self._client = self._client, None
        await anyio.to_thread.run_sync(self.part_pool.shutdown)
        if client is not None:
            await anyio.to_thread.run_sync(client.close)
