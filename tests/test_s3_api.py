"""The service on S3 end to end: a real server process, a moto server, raw HTTP.

The fault test puts a TCP proxy between the service and moto and cuts it in the middle
of a multipart upload, then checks through moto directly that nothing was left behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import pytest

from service.dicom import reasons
from tests.aws import MotoServer, unique_name
from tests.dicomgen import make_instance, new_uid
from tests.helpers import failures, multipart, referenced, stow_headers
from tests.server import ServerProcess
from tests.tcpproxy import TcpProxy
from tests.test_stow import retrieve, uids_of

PART = 5 * 1024 * 1024
PREFIX = "archive/one"


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    return boto3.client("s3", endpoint_url=moto.endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_name("api")
    s3.create_bucket(Bucket=name)
    return name


def objects(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def uploads(s3: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def s3_server(
    start_server: Callable[..., ServerProcess], endpoint: str, bucket: str
) -> ServerProcess:
    return start_server(
        storage=f"s3://{bucket}/{PREFIX}", s3_endpoint_url=endpoint, s3_part_size=str(PART)
    )


@pytest.fixture
def client_for() -> Iterator[Callable[[ServerProcess], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(server: ServerProcess) -> httpx.Client:
        clients.append(httpx.Client(base_url=server.root, timeout=120))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_stow_and_wado_on_s3(
    start_server: Callable[..., ServerProcess],
    moto: MotoServer,
    s3: Any,
    bucket: str,
    client_for: Callable[[ServerProcess], httpx.Client],
) -> None:
    server = s3_server(start_server, moto.endpoint, bucket)
    client = client_for(server)
    assert httpx.get(server.url + "/ready").status_code == 200
    study, series = new_uid(), new_uid()
    small = [make_instance(study=study, series=series, instance_number=i) for i in (1, 2)]
    # 3 frames of 1024x1024x2 bytes: over one 5 MiB part, so a multipart upload
    large = make_instance(study=study, series=series, rows=1024, cols=1024, frames=3)
    r = client.post("/studies", content=multipart(*small, large), headers=stow_headers())
    assert r.status_code == 200, r.text
    assert len(referenced(r.json())) == 3
    for data in [*small, large]:
        assert retrieve(client, uids_of(data)) == data
    keys = objects(s3, bucket)
    assert len(keys) == 3
    assert all(k.startswith(f"{PREFIX}/default/studies/{study}/series/{series}/") for k in keys)
    _, _, large_sop = uids_of(large)
    large_key = next(k for k in keys if large_sop in k)
    assert s3.head_object(Bucket=bucket, Key=large_key, PartNumber=1)["PartsCount"] == 2
    assert uploads(s3, bucket) == []
    # the whole series streams from S3 as multipart/related
    r = client.get(
        f"/studies/{study}/series/{series}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert r.status_code == 200
    for data in [*small, large]:
        assert data in r.content


def test_missing_bucket_is_not_ready_and_stow_fails_cleanly(
    start_server: Callable[..., ServerProcess],
    moto: MotoServer,
    client_for: Callable[[ServerProcess], httpx.Client],
) -> None:
    missing = unique_name("missing")
    server = s3_server(start_server, moto.endpoint, missing)
    client = client_for(server)
    assert httpx.get(server.url + "/health").status_code == 200
    r = httpx.get(server.url + "/ready")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert f"S3 bucket '{missing}' does not exist" in r.json()["detail"]
    data = make_instance()
    r = client.post("/studies", content=multipart(data), headers=stow_headers())
    assert r.status_code == 409
    [(reason, comment)] = failures(r.json())
    assert reason == reasons.PROCESSING_FAILURE
    assert missing in comment
    study, _, sop = uids_of(data)
    assert client.get(f"/studies/{study}/metadata").status_code == 404
    assert client.get("/instances", params={"SOPInstanceUID": sop}).json() == []


def test_s3_cut_mid_upload_fails_the_instance_and_leaves_nothing(
    start_server: Callable[..., ServerProcess],
    moto: MotoServer,
    s3: Any,
    bucket: str,
    client_for: Callable[[ServerProcess], httpx.Client],
) -> None:
    proxy = TcpProxy(moto.port)
    try:
        server = s3_server(start_server, proxy.endpoint, bucket)
        client = client_for(server)
        assert httpx.get(server.url + "/ready").status_code == 200
        # 3 parts of 5 MiB; the line goes dead once the first part and a bit are through.
        data = make_instance(rows=1000, cols=1280, frames=6)
        assert 2 * PART < len(data) < 3 * PART
        proxy.cut_after(PART + 1024 * 1024)
        r = client.post("/studies", content=multipart(data), headers=stow_headers())
        assert proxy.cut_happened.is_set()
        assert r.status_code == 409, r.text
        [(reason, comment)] = failures(r.json())
        assert reason == reasons.PROCESSING_FAILURE
        assert bucket in comment
        assert "cannot be reached" in comment
        study, series, sop = uids_of(data)
        # nothing is visible through the service, nothing completed in the bucket
        assert client.get(f"/studies/{study}/series/{series}/instances/{sop}").status_code == 404
        assert client.get("/instances", params={"SOPInstanceUID": sop}).json() == []
        assert objects(s3, bucket) == []
        # the line is still down, so the abort could not reach S3 either; the upload is
        # still open (seen through moto directly) until the endpoint answers again
        assert len(uploads(s3, bucket)) == 1
        assert httpx.get(server.url + "/ready", timeout=60).status_code == 503
        proxy.restore()
        assert httpx.get(server.url + "/ready", timeout=60).status_code == 200
        assert uploads(s3, bucket) == []
        # and the service goes on storing
        r = client.post("/studies", content=multipart(data), headers=stow_headers())
        assert r.status_code == 200, r.text
        assert retrieve(client, (study, series, sop)) == data
        assert len(objects(s3, bucket)) == 1
        assert uploads(s3, bucket) == []
    finally:
        proxy.close()


def test_concurrent_large_stows_on_s3(
    start_server: Callable[..., ServerProcess],
    moto: MotoServer,
    s3: Any,
    bucket: str,
    client_for: Callable[[ServerProcess], httpx.Client],
) -> None:
    server = s3_server(start_server, moto.endpoint, bucket)
    instances = [make_instance(rows=1024, cols=1024, frames=3, pixel_seed=i) for i in range(3)]
    results: list[int] = []

    def send(data: bytes) -> None:
        with httpx.Client(base_url=server.root, timeout=120) as c:
            results.append(
                c.post("/studies", content=multipart(data), headers=stow_headers()).status_code
            )

    threads = [threading.Thread(target=send, args=(d,)) for d in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200, 200, 200]
    client = client_for(server)
    for data in instances:
        assert retrieve(client, uids_of(data)) == data
    assert len(objects(s3, bucket)) == 3
    assert uploads(s3, bucket) == []


def test_retrieve_while_s3_is_unreachable_is_a_503_not_a_cut_body(
    start_server: Callable[..., ServerProcess],
    moto: MotoServer,
    bucket: str,
    client_for: Callable[[ServerProcess], httpx.Client],
) -> None:
    proxy = TcpProxy(moto.port)
    try:
        server = s3_server(start_server, proxy.endpoint, bucket)
        client = client_for(server)
        data = make_instance(rows=64, cols=64)
        assert (
            client.post("/studies", content=multipart(data), headers=stow_headers()).status_code
            == 200
        )
        study, series, sop = uids_of(data)
        proxy.cut()  # S3 stops answering; the index still knows the instance
        for path, accept in (
            (f"/studies/{study}/series/{series}/instances/{sop}", "application/dicom"),
            (f"/studies/{study}/series/{series}", 'multipart/related; type="application/dicom"'),
        ):
            r = client.get(path, headers={"Accept": f"{accept}; transfer-syntax=*"})
            assert r.status_code == 503, (path, r.status_code)
            assert bucket in r.json()["detail"]
        proxy.restore()
        assert retrieve(client, (study, series, sop)) == data  # and serves again
    finally:
        proxy.close()
