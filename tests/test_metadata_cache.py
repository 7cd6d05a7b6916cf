"""Study and series metadata from precomputed documents: ETag, 304, gzip, and a document
that follows every change to the study."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.dicomgen import make_instance, new_uid
from tests.helpers import multipart, stow_headers

JSON = {"Accept": "application/dicom+json"}


def stow(client: httpx.Client, *instances: bytes) -> None:
    r = client.post("/studies", content=multipart(*instances), headers=stow_headers())
    assert r.status_code == 200, r.text


def sops(response: httpx.Response) -> list[str]:
    return sorted(doc["00080018"]["Value"][0] for doc in response.json())


@pytest.fixture
def client(start_server):  # type: ignore[no-untyped-def]
    # Warming off: these tests see documents built on request, and so can tell when.
    proc = start_server(metadata_warm_delay="0")
    with httpx.Client(base_url=proc.root, timeout=30) as c:
        c.data_dir = proc.data_dir  # type: ignore[attr-defined]
        yield c


def test_study_metadata_etag_304_and_change(client: httpx.Client) -> None:
    study, series = new_uid(), new_uid()
    first = [make_instance(study=study, series=series, instance_number=i) for i in (1, 2)]
    stow(client, *first)
    r1 = client.get(f"/studies/{study}/metadata", headers=JSON)
    assert r1.status_code == 200
    etag = r1.headers["etag"]
    assert etag.startswith('W/"') and r1.headers["cache-control"] == "no-cache"
    assert len(r1.json()) == 2

    again = client.get(f"/studies/{study}/metadata", headers={**JSON, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    listed = client.get(
        f"/studies/{study}/metadata", headers={**JSON, "If-None-Match": f'"x", {etag[2:]}'}
    )
    assert listed.status_code == 304  # weak comparison, list of tags

    stow(client, make_instance(study=study, series=series, instance_number=3))
    stale = client.get(f"/studies/{study}/metadata", headers={**JSON, "If-None-Match": etag})
    assert stale.status_code == 200
    assert stale.headers["etag"] != etag
    assert len(stale.json()) == 3


def test_series_metadata_has_its_own_revision(client: httpx.Client) -> None:
    study, a, b = new_uid(), new_uid(), new_uid()
    stow(client, make_instance(study=study, series=a), make_instance(study=study, series=b))
    ra = client.get(f"/studies/{study}/series/{a}/metadata", headers=JSON)
    rb = client.get(f"/studies/{study}/series/{b}/metadata", headers=JSON)
    stow(client, make_instance(study=study, series=b))
    ra2 = client.get(
        f"/studies/{study}/series/{a}/metadata",
        headers={**JSON, "If-None-Match": ra.headers["etag"]},
    )
    rb2 = client.get(
        f"/studies/{study}/series/{b}/metadata",
        headers={**JSON, "If-None-Match": rb.headers["etag"]},
    )
    assert ra2.status_code == 304
    assert rb2.status_code == 200 and len(rb2.json()) == 2


def test_gzip_when_accepted_identity_otherwise(client: httpx.Client) -> None:
    study = new_uid()
    stow(client, *(make_instance(study=study, instance_number=i) for i in range(5)))
    url = f"{client.base_url}/studies/{study}/metadata"
    raw = httpx.get(url, headers={**JSON, "Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.headers["vary"] == "Accept-Encoding"
    # httpx decodes it; the bytes on the wire are gzip.
    with httpx.stream("GET", url, headers={**JSON, "Accept-Encoding": "gzip"}) as s:
        wire = b"".join(s.iter_raw())
    assert json.loads(gzip.decompress(wire)) == raw.json()
    plain = httpx.get(url, headers={**JSON, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.json() == raw.json()
    refused = httpx.get(url, headers={**JSON, "Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_bulk_data_uris_follow_the_base_url(start_server) -> None:  # type: ignore[no-untyped-def]
    proc = start_server(public_url="https://pacs.example.org", metadata_warm_delay="0")
    study = new_uid()
    with httpx.Client(base_url=proc.root) as client:
        stow(client, make_instance(study=study, rows=64, cols=64))
        doc = client.get(f"/studies/{study}/metadata", headers=JSON).json()[0]
    uri = doc["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"https://pacs.example.org/dicom-web/studies/{study}/series/")
    assert uri.endswith("/bulkdata/7FE00010")


@pytest.mark.embedded_only
def test_documents_survive_a_restart_from_storage(start_server) -> None:  # type: ignore[no-untyped-def]
    proc = start_server(metadata_warm_delay="0")
    study = new_uid()
    with httpx.Client(base_url=proc.root) as client:
        stow(client, *(make_instance(study=study) for _ in range(3)))
        first = client.get(f"/studies/{study}/metadata", headers=JSON)
    cached = list(Path(proc.data_dir, "blobs").rglob("cache/metadata/*/study.*.json.gz"))
    assert len(cached) == 1
    proc.stop()
    proc.start()
    with httpx.Client(base_url=proc.root) as client:
        again = client.get(
            f"/studies/{study}/metadata", headers={**JSON, "If-None-Match": first.headers["etag"]}
        )
        assert again.status_code == 304
        assert sops(client.get(f"/studies/{study}/metadata", headers=JSON)) == sops(first)


@pytest.mark.embedded_only
def test_warmer_builds_documents_after_a_quiet_period(start_server) -> None:  # type: ignore[no-untyped-def]
    proc = start_server(metadata_warm_delay="0.2")
    study, series = new_uid(), new_uid()
    with httpx.Client(base_url=proc.root) as client:
        stow(client, make_instance(study=study, series=series))
    blobs = Path(proc.data_dir, "blobs")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = {p.name.rsplit(".", 3)[0] for p in blobs.rglob(f"cache/metadata/{study}/*.json.gz")}
        if found == {"study", series}:
            break
        time.sleep(0.05)
    assert found == {"study", series}


@pytest.mark.embedded_only
def test_the_warmer_waits_while_a_request_is_served(start_server) -> None:  # type: ignore[no-untyped-def]
    proc = start_server(metadata_warm_delay="0.2")
    study, series = new_uid(), new_uid()
    blobs = Path(proc.data_dir, "blobs")

    def warmed() -> set[str]:
        return {p.name.rsplit(".", 3)[0] for p in blobs.rglob(f"cache/metadata/{study}/*.json.gz")}

    body = multipart(make_instance())

    def slowly() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        time.sleep(2)  # an upload in progress, long past the study's quiet time
        yield body[len(body) // 2 :]

    with httpx.Client(base_url=proc.root, timeout=30) as client:
        stow(client, make_instance(study=study, series=series))
        with ThreadPoolExecutor(1) as pool:
            upload = pool.submit(client.post, "/studies", content=slowly(), headers=stow_headers())
            time.sleep(1.5)
            assert warmed() == set()  # the upload holds the warmer back
            assert upload.result().status_code == 200
    deadline = time.monotonic() + 10
    while warmed() != {"study", series} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert warmed() == {"study", series}


def test_unknown_study_and_series_metadata_are_404(client: httpx.Client) -> None:
    r = client.get(f"/studies/{new_uid()}/metadata", headers=JSON)
    assert r.status_code == 404 and "is not stored here" in r.json()["detail"]
    study = new_uid()
    stow(client, make_instance(study=study))
    r = client.get(f"/studies/{study}/series/{new_uid()}/metadata", headers=JSON)
    assert r.status_code == 404 and "series" in r.json()["detail"]
    bad = client.get("/studies/1..2/metadata", headers=JSON)
    assert bad.status_code == 400


@pytest.mark.embedded_only
def test_a_corrupt_cache_file_is_rebuilt_not_served(start_server) -> None:  # type: ignore[no-untyped-def]
    proc = start_server(metadata_warm_delay="0")
    study = new_uid()
    with httpx.Client(base_url=proc.root) as client:
        stow(client, make_instance(study=study), make_instance(study=study))
        first = client.get(f"/studies/{study}/metadata", headers=JSON)
    cache = next(Path(proc.data_dir, "blobs").rglob(f"cache/metadata/{study}/study.*"))
    proc.stop()
    for damaged in (b"\x00" * 3, cache.read_bytes()[:40] + b"not gzip"):
        cache.write_bytes(damaged)
        proc.start()
        with httpx.Client(base_url=proc.root) as client:
            again = client.get(f"/studies/{study}/metadata", headers=JSON)
        proc.stop()
        assert again.status_code == 200
        assert again.json() == first.json()
