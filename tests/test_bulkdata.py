"""WADO-RS bulk data: every BulkDataURI our metadata hands out resolves to the value,
in little endian byte order, with Range on the single-part form; bad requests are told
what was wrong."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset

from tests.dicomgen import encode, make_dataset, new_uid
from tests.helpers import multipart, pydicom_file, stow_headers
from tests.test_wado import split

OCTET = {"Accept": "application/octet-stream"}


def stored(client: httpx.Client, ds: Dataset, data: bytes | None = None) -> str:
    """STOW ``ds`` (or ``data``); return the instance URL."""
    r = client.post("/studies", content=multipart(data or encode(ds)), headers=stow_headers())
    assert r.status_code == 200, r.text
    return (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def bulk_uris(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "BulkDataURI" in node:
            yield node["BulkDataURI"]
        for value in node.values():
            yield from bulk_uris(value)
    elif isinstance(node, list):
        for value in node:
            yield from bulk_uris(value)


def with_new_uids(data: bytes) -> tuple[Dataset, bytes]:
    """A pydicom test file under fresh UIDs, written in its own transfer syntax."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = new_uid(), new_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    out = io.BytesIO()
    ds.save_as(out)
    return ds, out.getvalue()


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.root, timeout=30) as c:
        yield c


def test_native_pixel_data_single_part_multipart_and_ranges(client: httpx.Client) -> None:
    ds = make_dataset(rows=64, cols=48, frames=3, pixel_seed=7)
    url = stored(client, ds) + "/bulkdata/7FE00010"
    one = client.get(url, headers=OCTET)
    assert one.status_code == 200
    assert one.headers["content-type"] == "application/octet-stream"
    assert one.headers["accept-ranges"] == "bytes"
    assert one.content == ds.PixelData
    parts = split(client.get(url))  # default: multipart/related
    assert [p[1] for p in parts] == [ds.PixelData]
    assert parts[0][0]["content-type"] == "application/octet-stream"
    size = len(ds.PixelData)
    for header, start, end in (
        ("bytes=100-199", 100, 200),
        ("bytes=100-", 100, size),
        ("bytes=-10", size - 10, size),
        (f"bytes=0-{size + 50}", 0, size),
    ):
        r = client.get(url, headers={**OCTET, "Range": header})
        assert r.status_code == 206, header
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
        assert r.content == ds.PixelData[start:end]
    # Several ranges, or a Range we cannot read, are ignored: the whole value.
    for header in ("bytes=0-1,5-6", "bytes=abc", "items=0-1"):
        r = client.get(url, headers={**OCTET, "Range": header})
        assert r.status_code == 200 and r.content == ds.PixelData, header
    bad = client.get(url, headers={**OCTET, "Range": f"bytes={size}-"})
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{size}"
    assert "outside" in bad.json()["detail"]


def test_values_in_sequences_and_large_top_level_values(client: httpx.Client) -> None:
    ds = make_dataset()
    icon = Dataset()
    icon.Rows = icon.Columns = 32
    icon.PixelData = bytes(range(256)) * 8  # 2 KB: over the inline limit
    icon["PixelData"].VR = "OB"
    ds.IconImageSequence = [icon]
    ds.EncapsulatedDocument = bytes(i % 253 for i in range(300_000))  # read as a range
    ds.add_new(0x00090010, "LO", "OUR CREATOR")
    ds.add_new(0x00091011, "OB", b"\x01\x02" * 5000)
    url = stored(client, ds)
    meta = client.get(url + "/metadata").json()[0]
    uris = sorted(bulk_uris(meta))
    assert any(u.endswith("/bulkdata/00880200/0/7FE00010") for u in uris)
    assert any(u.endswith("/bulkdata/00420011") for u in uris)
    expected = {
        "00880200/0/7FE00010": icon.PixelData,
        "00420011": ds.EncapsulatedDocument,
        "00091011": b"\x01\x02" * 5000,
        "7FE00010": ds.PixelData,
    }
    for uri in uris:
        path = uri.split("/bulkdata/", 1)[1]
        r = httpx.get(uri, headers=OCTET)
        assert r.status_code == 200, (uri, r.text)
        assert r.content == expected[path], path
    r = client.get(url + "/bulkdata/00420011", headers={**OCTET, "Range": "bytes=299990-"})
    assert r.status_code == 206 and r.content == ds.EncapsulatedDocument[299990:]


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "CT_small.dcm",
        "examples_palette.dcm",
        "waveform_ecg.dcm",
        "SC_rgb_small_odd_big_endian.dcm",
    ],
)
def test_every_uri_of_pydicom_files_resolves_little_endian(client: httpx.Client, name: str) -> None:
    ds, data = with_new_uids(pydicom_file(name))
    url = stored(client, ds, data)
    meta = client.get(url + "/metadata").json()[0]
    uris = list(bulk_uris(meta))
    assert uris
    for uri in uris:
        r = httpx.get(uri, headers=OCTET)
        assert r.status_code == 200, (uri, r.text)
        if uri.endswith("/bulkdata/7FE00010"):
            pixels = ds.pixel_array
            little = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
            # The value as stored: an odd-length value carries its padding byte.
            assert r.content[: len(little)] == little
            assert len(r.content) - len(little) in (0, 1)


def test_dicomweb_client_retrieves_bulk_data(server) -> None:  # type: ignore[no-untyped-def]
    ds = make_dataset(rows=32, cols=32, pixel_seed=3)
    with httpx.Client(base_url=server.root) as c:
        url = stored(c, ds)
    web = DICOMwebClient(server.root)
    meta = web.retrieve_instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    uri = meta["7FE00010"]["BulkDataURI"]
    assert url in uri
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so the URIs we build
    # from its Host header name port 80; point it back at the test server's port.
    got = web.retrieve_bulkdata(server.url + uri.split("127.0.0.1", 1)[1])
    assert got == [ds.PixelData]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("7FE0001", 400, "not a tag"),
        ("GGGGGGGG", 400, "not a tag"),
        ("00880200/x/7FE00010", 400, "not a tag"),
        ("00880200/0", 400, "not a tag"),
        ("00420011", 404, "no element (0042,0011)"),
        ("00880200/0/7FE00010", 404, "no sequence (0088,0200)"),
        ("00081115/0/00081155", 404, "no sequence"),
    ],
)
def test_bad_paths(client: httpx.Client, path: str, status: int, message: str) -> None:
    url = stored(client, make_dataset())
    r = client.get(f"{url}/bulkdata/{path}", headers=OCTET)
    assert r.status_code == status
    assert message in r.json()["detail"]


def test_item_out_of_range_sequence_path_and_accept(client: httpx.Client) -> None:
    ds = make_dataset()
    item = Dataset()
    item.ReferencedSOPInstanceUID = new_uid()
    ds.ReferencedImageSequence = [item]
    url = stored(client, ds)
    r = client.get(f"{url}/bulkdata/00081140/3/00081155", headers=OCTET)
    assert r.status_code == 404 and "has 1 item(s); there is no item 3" in r.json()["detail"]
    r = client.get(f"{url}/bulkdata/00081140", headers=OCTET)
    assert r.status_code == 400 and "sequence" in r.json()["detail"]
    r = client.get(f"{url}/bulkdata/7FE00010", headers={"Accept": "image/png"})
    assert r.status_code == 406 and "application/octet-stream" in r.json()["detail"]
    missing = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{new_uid()}"
    assert client.get(f"{missing}/bulkdata/7FE00010").status_code == 404
    assert (
        client.get(f"{url.replace(ds.SOPInstanceUID, '1.2.x')}/bulkdata/7FE00010").status_code
        == 400
    )


@pytest.mark.parametrize(
    "name", ["JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_jpeg_dcmtk.dcm"]
)
def test_compressed_pixel_data_bulk_data_is_its_frames(client: httpx.Client, name: str) -> None:
    from pydicom.encaps import generate_frames

    ds, data = with_new_uids(pydicom_file(name))
    url = stored(client, ds, data)
    uri = client.get(url + "/metadata").json()[0]["7FE00010"]["BulkDataURI"]
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = list(generate_frames(ds.PixelData, number_of_frames=frames))
    as_stored = httpx.get(
        uri,
        headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
    )
    assert as_stored.status_code == 200, as_stored.text
    parts = split(as_stored)
    assert [p[1] for p in parts] == expected
    assert all(ds.file_meta.TransferSyntaxUID in p[0]["content-type"] for p in parts)
    decoded = split(httpx.get(uri))  # the default: uncompressed frames
    assert len(decoded) == frames
    assert all("1.2.840.10008.1.2.1" in p[0]["content-type"] for p in decoded)


def test_deflated_instance_bulk_data(client: httpx.Client) -> None:
    ds, data = with_new_uids(pydicom_file("image_dfl.dcm"))
    url = stored(client, ds, data)
    uri = client.get(url + "/metadata").json()[0]["7FE00010"]["BulkDataURI"]
    r = httpx.get(uri, headers=OCTET)
    assert r.status_code == 200
    assert r.content == ds.PixelData


def test_pixel_data_of_an_instance_without_any(client: httpx.Client) -> None:
    ds = make_dataset()
    del ds.PixelData
    url = stored(client, ds)
    r = client.get(f"{url}/bulkdata/7FE00010", headers=OCTET)
    assert r.status_code == 404
    assert "has no pixel data" in r.json()["detail"]
