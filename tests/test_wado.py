"""WADO-RS end to end: instances, series, studies and metadata."""

from __future__ import annotations

import io
import json

import httpx
import pydicom
import pytest

from tests.dicomgen import make_instance, new_uid
from tests.helpers import multipart, pydicom_file, stow_headers

ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def split(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Parse a multipart/related response independently of the service's code."""
    ctype = response.headers["content-type"]
    assert ctype.startswith("multipart/related")
    boundary = next(
        p.split("=", 1)[1].strip('"') for p in ctype.split(";") if p.strip().startswith("boundary=")
    )
    body = response.content
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())
    parts = []
    for chunk in body.split(f"--{boundary}".encode())[1:-1]:
        head, _, payload = chunk.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().strip().split("\r\n") if line)
        parts.append(({k.lower(): v for k, v in headers.items()}, payload[:-2]))
    return parts


@pytest.fixture(scope="module")
def study(server) -> dict[str, object]:  # type: ignore[no-untyped-def]
    study_uid, series = new_uid(), [new_uid(), new_uid()]
    instances = {
        (se, i): make_instance(
            study=study_uid, series=se, instance_number=i, rows=16, cols=16, pixel_seed=i
        )
        for se in series
        for i in (3, 1, 2)
    }
    with httpx.Client(base_url=server.root) as client:
        r = client.post("/studies", content=multipart(*instances.values()), headers=stow_headers())
        assert r.status_code == 200, r.text
    return {"uid": study_uid, "series": series, "instances": instances}


def sop_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def test_retrieve_study_series_instance(http: httpx.Client, study: dict) -> None:  # type: ignore[type-arg]
    uid, series, instances = study["uid"], study["series"], study["instances"]
    parts = split(http.get(f"/studies/{uid}", headers={"Accept": ANY_SYNTAX}))
    assert sorted(p for _, p in parts) == sorted(instances.values())
    for headers, _ in parts:
        assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    r = http.get(f"/studies/{uid}/series/{series[0]}", headers={"Accept": ANY_SYNTAX})
    parts = split(r)
    # ordered by Instance Number
    assert [p for _, p in parts] == [instances[(series[0], i)] for i in (1, 2, 3)]
    data = instances[(series[1], 2)]
    r = http.get(
        f"/studies/{uid}/series/{series[1]}/instances/{sop_of(data)}",
        headers={"Accept": ANY_SYNTAX},
    )
    assert [p for _, p in split(r)] == [data]


def test_default_accept_gets_explicit_little_endian(http: httpx.Client, study: dict) -> None:  # type: ignore[type-arg]
    r = http.get(f"/studies/{study['uid']}")
    assert r.status_code == 200
    assert len(split(r)) == 6


def test_single_part_instance(http: httpx.Client, study: dict) -> None:  # type: ignore[type-arg]
    se = study["series"][0]
    data = study["instances"][(se, 1)]
    r = http.get(
        f"/studies/{study['uid']}/series/{se}/instances/{sop_of(data)}",
        headers={"Accept": "application/dicom"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/dicom")
    assert r.content == data


def test_metadata_levels(http: httpx.Client, study: dict, server) -> None:  # type: ignore[no-untyped-def,type-arg]
    uid, series = study["uid"], study["series"]
    r = http.get(f"/studies/{uid}/metadata", headers={"Accept": "application/dicom+json"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")
    docs = r.json()
    assert len(docs) == 6
    assert all(d["0020000D"]["Value"] == [uid] for d in docs)
    assert all("00020010" not in d for d in docs)  # no File Meta
    first = docs[0]
    sop = first["00080018"]["Value"][0]
    se = first["0020000E"]["Value"][0]
    assert first["7FE00010"]["BulkDataURI"] == (
        f"{server.root}/studies/{uid}/series/{se}/instances/{sop}/bulkdata/7FE00010"
    )
    assert first["00100010"]["Value"] == [{"Alphabetic": "DOE^JANE"}]
    assert len(http.get(f"/studies/{uid}/series/{series[0]}/metadata").json()) == 3
    one = http.get(f"/studies/{uid}/series/{se}/instances/{sop}/metadata").json()
    assert one == [first]


def test_metadata_of_real_files_is_valid_json(http: httpx.Client) -> None:
    for name in ("rtplan.dcm", "chrH31.dcm", "rtdose.dcm"):
        data = pydicom_file(name)
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        http.post("/studies", content=multipart(data), headers=stow_headers())
        r = http.get(
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}/metadata"
        )
        assert r.status_code == 200, (name, r.text)
        [doc] = json.loads(r.content)
        assert doc["00080018"]["Value"] == [ds.SOPInstanceUID]


@pytest.mark.parametrize(
    "path",
    [
        "/studies/1.2.3.999",
        "/studies/1.2.3.999/metadata",
        "/studies/{study}/series/1.2.3.999",
        "/studies/{study}/series/{series}/instances/1.2.3.999",
        "/studies/{study}/series/{series}/instances/1.2.3.999/metadata",
    ],
)
def test_unknown_uids_are_404(http: httpx.Client, study: dict, path: str) -> None:  # type: ignore[type-arg]
    r = http.get(path.format(study=study["uid"], series=study["series"][0]))
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert "1.2.3.999" in detail
    assert detail.endswith("is not stored here")


@pytest.mark.parametrize(
    "path",
    [
        "/studies/1.2.abc",
        "/studies/01.2",
        "/studies/{study}/series/1.2.-3",
        "/studies/{study}/series/{series}/instances/1..2/metadata",
        "/studies/" + "1" * 70,
    ],
)
def test_malformed_uids_are_400(http: httpx.Client, study: dict, path: str) -> None:  # type: ignore[type-arg]
    r = http.get(path.format(study=study["uid"], series=study["series"][0]))
    assert r.status_code == 400
    assert "not a valid DICOM UID" in r.json()["detail"]


@pytest.mark.parametrize(
    ("accept", "words"),
    [
        ("image/jpeg", "image/jpeg is not offered"),
        (
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
            "cannot be transcoded to it here",
        ),
        ("application/dicom", "single part"),
        ('multipart/related; type="application/octet-stream"', "not offered"),
    ],
)
def test_unacceptable_is_406(http: httpx.Client, study: dict, accept: str, words: str) -> None:  # type: ignore[type-arg]
    r = http.get(f"/studies/{study['uid']}", headers={"Accept": accept})
    assert r.status_code == 406
    assert words in r.json()["detail"]


def test_metadata_406(http: httpx.Client, study: dict) -> None:  # type: ignore[type-arg]
    r = http.get(f"/studies/{study['uid']}/metadata", headers={"Accept": "application/dicom+xml"})
    assert r.status_code == 406
    assert "application/dicom+json" in r.json()["detail"]


def test_compressed_instance_in_its_syntax_or_transcoded(http: httpx.Client) -> None:
    data = pydicom_file("JPEG2000.dcm")
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    http.post("/studies", content=multipart(data), headers=stow_headers())
    path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    [(headers, _)] = split(http.get(path))  # default: explicit VR little endian, transcoded
    assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    ts = ds.file_meta.TransferSyntaxUID
    r = http.get(
        path,
        headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ts}'},
    )
    assert r.status_code == 200
    [(headers, payload)] = split(r)
    assert payload == data and headers["content-type"].endswith(f"transfer-syntax={ts}")


def test_health_and_ready(server) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").json() == {"status": "ready"}


def test_unknown_route_is_problem_json(http: httpx.Client) -> None:
    r = http.get("/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
