"""STOW-RS end to end: a real server process, raw HTTP."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator

import httpx
import pydicom
import pytest

from service.dicom import reasons
from tests.dicomgen import make_instance, new_uid
from tests.helpers import (
    failures,
    multipart,
    pydicom_file,
    referenced,
    snapshot,
    stow_headers,
)
from tests.server import ServerProcess

ALL_STORED = 200

# pydicom's bundled files, one per transfer syntax family.
SYNTAX_FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "ExplVR_BigEnd.dcm",  # explicit VR big endian
    "image_dfl.dcm",  # deflated explicit VR little endian
    "JPEG2000.dcm",  # JPEG 2000, encapsulated
    "SC_rgb_rle.dcm",  # RLE lossless
    "JPEG-lossy.dcm",  # JPEG baseline
    "rtdose.dcm",  # multi-frame, implicit VR
    "examples_ybr_color.dcm",  # multi-frame JPEG
    "rtplan.dcm",  # no pixel data, nested sequences
    "chrH31.dcm",  # Japanese character sets
]


def retrieve(client: httpx.Client, uid: tuple[str, str, str]) -> bytes:
    study, series, sop = uid
    r = client.get(
        f"/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": "application/dicom; transfer-syntax=*"},
    )
    assert r.status_code == 200, r.text
    return r.content


def uids_of(data: bytes) -> tuple[str, str, str]:
    import io

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


@pytest.fixture
def fresh(
    start_server: Callable[..., ServerProcess],
) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    server = start_server()
    with httpx.Client(base_url=server.root, timeout=60) as client:
        yield server, client


def test_multipart_of_every_syntax_is_stored_byte_for_byte(
    fresh: tuple[ServerProcess, httpx.Client],
) -> None:
    _, client = fresh
    files = [pydicom_file(name) for name in SYNTAX_FILES]
    r = client.post("/studies", content=multipart(*files), headers=stow_headers())
    assert r.status_code == ALL_STORED, r.text
    assert referenced(r.json()) == [uids_of(f)[2] for f in files]
    for data in files:
        assert retrieve(client, uids_of(data)) == data


def test_single_part_body(fresh: tuple[ServerProcess, httpx.Client]) -> None:
    server, client = fresh
    data = make_instance()
    r = client.post("/studies", content=data, headers={"Content-Type": "application/dicom"})
    assert r.status_code == 200, r.text
    body = r.json()
    [item] = body["00081199"]["Value"]
    study, series, sop = uids_of(data)
    assert item["00081190"]["Value"] == [
        f"{server.root}/studies/{study}/series/{series}/instances/{sop}"
    ]
    assert body["00081190"]["Value"] == [f"{server.root}/studies/{study}"]
    assert retrieve(client, (study, series, sop)) == data


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/related; type=application/dicom; boundary={b}", "plain"),
        ('multipart/related;type="application/dicom";boundary="{b}"', "quoted:=+_,()?"),
        (
            'Multipart/Related; boundary={b}; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.1",
            "x" * 70,
        ),
        ("multipart/related; boundary={b}", "no-type-param"),
    ],
)
def test_content_type_spellings(http: httpx.Client, content_type: str, boundary: str) -> None:
    data = make_instance()
    r = http.post(
        "/studies",
        content=multipart(data, boundary=boundary),
        headers={"Content-Type": content_type.format(b=boundary)},
    )
    assert r.status_code == 200, r.text
    assert retrieve(http, uids_of(data)) == data


def test_study_url_accepts_its_own_instances(http: httpx.Client) -> None:
    study = new_uid()
    parts = [make_instance(study=study, instance_number=i) for i in range(3)]
    r = http.post(f"/studies/{study}", content=multipart(*parts), headers=stow_headers())
    assert r.status_code == 200, r.text
    assert len(referenced(r.json())) == 3


def test_identical_reupload_is_idempotent(fresh: tuple[ServerProcess, httpx.Client]) -> None:
    server, client = fresh
    data = make_instance()
    assert (
        client.post("/studies", content=multipart(data), headers=stow_headers()).status_code == 200
    )
    before = snapshot(server)
    r = client.post("/studies", content=multipart(data), headers=stow_headers())
    assert r.status_code == 200, r.text
    assert referenced(r.json()) == [uids_of(data)[2]]
    assert snapshot(server) == before


# ---------------------------------------------------------------- bad input


def test_conflicting_duplicate_is_refused_and_original_kept(
    fresh: tuple[ServerProcess, httpx.Client],
) -> None:
    server, client = fresh
    study, series, sop = new_uid(), new_uid(), new_uid()
    original = make_instance(study=study, series=series, sop=sop, pixel_seed=1)
    changed = make_instance(study=study, series=series, sop=sop, pixel_seed=2)
    assert (
        client.post("/studies", content=multipart(original), headers=stow_headers()).status_code
        == 200
    )
    before = snapshot(server)
    r = client.post("/studies", content=multipart(changed), headers=stow_headers())
    assert r.status_code == 409, r.text
    [(reason, comment)] = failures(r.json())
    assert reason == reasons.DUPLICATE_CONFLICT
    assert "already stored with different content" in comment
    assert snapshot(server) == before
    assert retrieve(client, (study, series, sop)) == original


def test_replace_policy_replaces(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(duplicates="replace")
    study, series, sop = new_uid(), new_uid(), new_uid()
    original = make_instance(study=study, series=series, sop=sop, pixel_seed=1)
    changed = make_instance(study=study, series=series, sop=sop, pixel_seed=2)
    with httpx.Client(base_url=server.root) as client:
        for data in (original, changed):
            r = client.post("/studies", content=multipart(data), headers=stow_headers())
            assert r.status_code == 200, r.text
        assert retrieve(client, (study, series, sop)) == changed
    state = snapshot(server)
    assert len(state["files"]) == 1 and len(state["rows"]) == 1  # old blob removed
    assert state["rows"][0][2] == hashlib.sha256(changed).hexdigest()


def test_study_mismatch(fresh: tuple[ServerProcess, httpx.Client]) -> None:
    server, client = fresh
    url_study = new_uid()
    good = make_instance(study=url_study)
    wrong = make_instance()
    before = snapshot(server)
    r = client.post(f"/studies/{url_study}", content=multipart(wrong), headers=stow_headers())
    assert r.status_code == 409
    [(reason, comment)] = failures(r.json())
    assert reason == reasons.STUDY_MISMATCH and url_study in comment
    assert snapshot(server) == before
    r = client.post(f"/studies/{url_study}", content=multipart(good, wrong), headers=stow_headers())
    assert r.status_code == 202, r.text
    assert referenced(r.json()) == [uids_of(good)[2]]
    assert [f[0] for f in failures(r.json())] == [reasons.STUDY_MISMATCH]
    assert "part 2" in r.headers["Warning"]


@pytest.mark.parametrize(
    ("body", "reason", "words"),
    [
        (b"this is not DICOM at all" * 10, reasons.CANNOT_UNDERSTAND, "not a DICOM Part 10"),
        (b"", reasons.CANNOT_UNDERSTAND, "not a DICOM Part 10"),
        ("truncated-header", reasons.CANNOT_UNDERSTAND, "truncated"),
        ("truncated-pixels", reasons.CANNOT_UNDERSTAND, "truncated"),
        ("no-sop-uid", reasons.CANNOT_UNDERSTAND, "SOPInstanceUID (0008,0018) is missing"),
        ("bad-uid", reasons.CANNOT_UNDERSTAND, "not a valid UID"),
    ],
)
def test_bad_parts_fail_alone(
    fresh: tuple[ServerProcess, httpx.Client], body: bytes | str, reason: int, words: str
) -> None:
    server, client = fresh
    full = make_instance(rows=64, cols=64)
    if body == "truncated-header":
        body = full[:300]
    elif body == "truncated-pixels":
        body = full[:-100]
    elif body == "no-sop-uid":
        from tests.dicomgen import encode, make_dataset

        ds = make_dataset()
        del ds.SOPInstanceUID
        body = encode(ds)
    elif body == "bad-uid":
        from tests.dicomgen import encode, make_dataset

        ds = make_dataset()
        with warnings.catch_warnings():  # pydicom warns; a broken modality would not
            warnings.simplefilter("ignore", UserWarning)
            ds.SeriesInstanceUID = "1.2.03.abc"
            body = encode(ds)
    assert isinstance(body, bytes)
    before = snapshot(server)
    r = client.post("/studies", content=multipart(body), headers=stow_headers())
    assert r.status_code == 409, r.text
    [(got_reason, comment)] = failures(r.json())
    assert got_reason == reason
    assert words in comment
    assert snapshot(server) == before
    # a good instance beside the bad one is stored: 202
    good = make_instance()
    r = client.post("/studies", content=multipart(good, body), headers=stow_headers())
    assert r.status_code == 202, r.text
    assert referenced(r.json()) == [uids_of(good)[2]]
    assert retrieve(client, uids_of(good)) == good


def test_part_of_another_type_fails(fresh: tuple[ServerProcess, httpx.Client]) -> None:
    server, client = fresh
    before = snapshot(server)
    r = client.post(
        "/studies",
        content=multipart(b'{"a": 1}', part_type="application/json"),
        headers=stow_headers(),
    )
    assert r.status_code == 409
    [(reason, comment)] = failures(r.json())
    assert reason == reasons.CANNOT_UNDERSTAND and "application/json" in comment
    assert snapshot(server) == before


@pytest.mark.parametrize(
    ("content_type", "status", "words"),
    [
        ("application/json", 415, "application/json is not accepted"),
        ('multipart/related; type="application/dicom+json"; boundary=x', 415, "dicom+json"),
        ("multipart/related; type=application/dicom", 400, "no boundary"),
        ("text", 400, "not a media type"),
        (None, 415, "Content-Type is required"),
    ],
)
def test_bad_content_type(
    fresh: tuple[ServerProcess, httpx.Client], content_type: str | None, status: int, words: str
) -> None:
    server, client = fresh
    before = snapshot(server)
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/studies", content=multipart(make_instance()), headers=headers)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/problem+json")
    assert words in r.json()["detail"]
    assert snapshot(server) == before


def test_missing_boundary_in_body(fresh: tuple[ServerProcess, httpx.Client]) -> None:
    server, client = fresh
    before = snapshot(server)
    r = client.post(
        "/studies",
        content=multipart(make_instance(), boundary="other"),
        headers=stow_headers("expected"),
    )
    assert r.status_code == 400
    assert "boundary" in r.json()["detail"]
    assert snapshot(server) == before


def test_body_cut_off_after_a_complete_part(fresh: tuple[ServerProcess, httpx.Client]) -> None:
    server, client = fresh
    good, cut = make_instance(), make_instance(rows=32, cols=32)
    body = multipart(good, cut)
    body = body[: body.rindex(cut[-50:])]  # the second part loses its tail
    r = client.post("/studies", content=body, headers=stow_headers())
    assert r.status_code == 202, r.text
    assert referenced(r.json()) == [uids_of(good)[2]]
    [(reason, comment)] = failures(r.json())
    assert reason == reasons.CANNOT_UNDERSTAND and "closing boundary" in comment
    assert len(snapshot(server)["rows"]) == 1
    assert snapshot(server)["temp"] == []


def test_empty_multipart(fresh: tuple[ServerProcess, httpx.Client]) -> None:
    _, client = fresh
    r = client.post("/studies", content=multipart(), headers=stow_headers())
    assert r.status_code == 400
    assert "no DICOM instance" in r.json()["detail"]


def test_malformed_study_uid_in_url(fresh: tuple[ServerProcess, httpx.Client]) -> None:
    _, client = fresh
    r = client.post("/studies/1.2.abc", content=multipart(make_instance()), headers=stow_headers())
    assert r.status_code == 400
    assert "not a valid DICOM UID" in r.json()["detail"]


def test_oversize(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(max_request_bytes="20000")
    small, large = make_instance(), make_instance(rows=128, cols=128)
    with httpx.Client(base_url=server.root) as client:
        before = snapshot(server)
        # announced by Content-Length: refused before reading
        r = client.post("/studies", content=multipart(large), headers=stow_headers())
        assert r.status_code == 413
        assert "DICOMWEB_MAX_REQUEST_BYTES" in r.json()["detail"]
        assert snapshot(server) == before

        # streamed without a length: refused when the limit is crossed; the complete
        # part before it stays stored
        def chunks() -> Iterator[bytes]:
            body = multipart(small, large)
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        r = client.post("/studies", content=chunks(), headers=stow_headers())
        assert r.status_code == 413
        assert referenced(r.json()) == [uids_of(small)[2]]
        [(reason, _)] = failures(r.json())
        assert reason == reasons.OUT_OF_RESOURCES
        after = snapshot(server)
        assert len(after["rows"]) == 1 and after["temp"] == [] and after["claims"] == 0
        assert retrieve(client, uids_of(small)) == small


def test_server_keeps_serving_after_bad_input(http: httpx.Client) -> None:
    for _ in range(3):
        http.post("/studies", content=b"garbage", headers=stow_headers())
    data = make_instance()
    assert http.post("/studies", content=multipart(data), headers=stow_headers()).status_code == 200
    assert retrieve(http, uids_of(data)) == data


def test_client_hanging_up_mid_upload_leaves_nothing(
    fresh: tuple[ServerProcess, httpx.Client],
) -> None:
    import socket

    server, client = fresh
    data = make_instance(rows=512, cols=512)
    body = multipart(data)
    head = (
        f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/related; type=application/dicom; boundary=test-boundary-7f3a\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body[: len(body) // 2])
    # the server notices, aborts the part, and goes on serving
    import time

    for _ in range(100):
        state = snapshot(server)
        if state["claims"] == 0 and state["temp"] == []:
            break
        time.sleep(0.05)
    assert state == {"files": {}, "rows": [], "claims": 0, "temp": []}
    r = client.post("/studies", content=body, headers=stow_headers())
    assert r.status_code == 200
    assert retrieve(client, uids_of(data)) == data
