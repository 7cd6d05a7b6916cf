"""WADO-RS frames: the frame table computed at ingest, the frame list, Accept
negotiation, and end to end against a real server with pydicom's compressed test files.

Expected bytes always come from pydicom itself: ``generate_frames`` for encapsulated
frames, ``pixel_array`` (or the Pixel Data value) for native and decoded frames."""

from __future__ import annotations

import io
import struct
from typing import Any

import anyio
import httpx
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels.utils import iter_pixels, pack_bits

from service.core.frames import FrameService, FrameSource, parse_frame_list
from service.dicom.frames import FrameTable, Layout, frame_table, read_layout
from service.dicom.part10 import Part10Scanner, parse_header
from service.dicomweb.frame_media import FrameChoice, choose_frame_media
from service.errors import MalformedRequest, NotAcceptable
from service.index.base import InstanceRef
from tests.dicomgen import make_instance, new_uid
from tests.framegen import reference_frames, refragmented, renamed
from tests.helpers import multipart, pydicom_file, stow_headers
from tests.test_wado import split

ELE = "1.2.840.10008.1.2.1"
JPEG = "1.2.840.10008.1.2.4.50"
AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
OCTET = 'multipart/related; type="application/octet-stream"'

# -- the frame table ---------------------------------------------------------------


def _table(data: bytes) -> FrameTable:
    scanner = Part10Scanner()
    scanner.feed(data)
    scan = scanner.finish()
    assert scan.pixel_data is not None
    return frame_table(parse_header(data, scan.header_end), scan.pixel_data, scan.transfer_syntax)


def test_native_frames_have_one_length() -> None:
    table = _table(renamed("rtdose.dcm"))  # implicit VR, 15 frames of 10x10x32 bits
    assert (table.count, table.native_length, table.decode) == (15, 400, False)


def test_single_bit_frames_off_byte_boundary_need_decoding() -> None:
    ds = pydicom.dcmread(io.BytesIO(renamed("liver_1frame.dcm")))
    assert _table(renamed("liver_1frame.dcm")).native_length == 512 * 512 // 8
    ds.Rows, ds.Columns, ds.NumberOfFrames = 3, 3, 8  # 9 bits a frame
    ds.PixelData = pack_bits(np.ones((8, 3, 3), dtype=np.uint8))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert _table(out.getvalue()).decode


def test_big_endian_needs_decoding() -> None:
    assert _table(renamed("MR_small_bigendian.dcm")).decode


@pytest.mark.parametrize(
    ("pieces", "table", "starts"),
    [
        (1, "basic", (0, 1, 2, 3)),
        (3, "basic", (0, 3, 6, 9)),
        (1, "extended", (0, 1, 2, 3)),
        (1, "none", (0, 1, 2, 3)),
        (3, "none", ()),  # unknown: found from the fragments' bytes when asked
    ],
)
def test_encapsulated_frame_starts(pieces: int, table: Any, starts: tuple[int, ...]) -> None:
    data = refragmented("examples_ybr_color.dcm", pieces=pieces, table=table, frames=4)
    assert _table(data).starts == starts


def test_extended_offset_table_wins_over_fragment_counting() -> None:
    """Three fragments per frame, no Basic Offset Table: only the Extended Offset
    Table tells where frames start."""
    frames = reference_frames(pydicom_file("examples_ybr_color.dcm"))[:3]
    with_bot = encapsulate(frames, fragments_per_frame=3, has_bot=True)
    bot_length = struct.unpack("<I", with_bot[4:8])[0]
    offsets = struct.unpack(f"<{bot_length // 4}I", with_bot[8 : 8 + bot_length])
    ds = pydicom.dcmread(
        io.BytesIO(refragmented("examples_ybr_color.dcm", pieces=1, table="none", frames=3))
    )
    ds.PixelData = encapsulate(frames, fragments_per_frame=3, has_bot=False)
    ds.ExtendedOffsetTable = struct.pack("<3Q", *offsets)
    ds.ExtendedOffsetTableLengths = struct.pack("<3Q", *(len(f) for f in frames))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert _table(out.getvalue()).starts == (0, 3, 6)


def test_layout_document_keeps_pixel_location_fields() -> None:
    layout = read_layout(
        b'{"tag":2145386512,"vr":"OB","element_offset":1,"value_offset":9,'
        b'"length":null,"frames":{"count":2,"frame_bytes":4,"starts":[0,1]}}'
    )
    assert layout is not None and layout.frames is not None
    assert (layout.value_offset, layout.frames.starts) == (9, (0, 1))
    assert read_layout(b"") is None


# -- the frame list ----------------------------------------------------------------


def test_frame_list_keeps_order() -> None:
    assert parse_frame_list("3,1, 2") == [3, 1, 2]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0", "start at 1"),
        ("-1", "not a frame number"),
        ("a", "not a frame number"),
        ("1.5", "not a frame number"),
        ("1,,2", "not a frame number"),
        ("", "not a frame number"),
        ("2,2", "listed twice"),
        ("9999999999", "not a frame number"),
    ],
)
def test_bad_frame_lists(text: str, words: str) -> None:
    with pytest.raises(MalformedRequest, match=words):
        parse_frame_list(text)


# -- negotiation -------------------------------------------------------------------


def _choose(accept: str | None, stored: str = JPEG, count: int = 1, **kw: bool) -> FrameChoice:
    options = {"servable": True, "decodable": True} | kw
    return choose_frame_media(accept, stored_syntax=stored, frame_count=count, **options)


@pytest.mark.parametrize(
    ("accept", "stored", "expected"),
    [
        (None, JPEG, (True, "application/octet-stream", ELE, True)),
        ("*/*", ELE, (True, "application/octet-stream", ELE, False)),
        (AS_STORED, JPEG, (True, "image/jpeg", JPEG, False)),
        (AS_STORED, ELE, (True, "application/octet-stream", ELE, False)),
        (OCTET, "1.2.840.10008.1.2", (True, "application/octet-stream", ELE, False)),
        (
            "multipart/related; type=image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
            JPEG,
            (True, "image/jpeg", JPEG, False),
        ),
        (
            'multipart/related; type="image/jpeg"; transfer-syntax=*',
            JPEG,
            (True, "image/jpeg", JPEG, False),
        ),
        (
            "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
            JPEG,
            (False, "image/jpeg", JPEG, False),
        ),
        ("application/octet-stream", JPEG, (False, "application/octet-stream", ELE, True)),
        (
            'multipart/related; type="image/jls"',
            "1.2.840.10008.1.2.4.80",
            (True, "image/jls", "1.2.840.10008.1.2.4.80", False),
        ),
        (
            'multipart/related; type="image/x-dicom-rle"',
            "1.2.840.10008.1.2.5",
            (True, "image/dicom-rle", "1.2.840.10008.1.2.5", False),
        ),
        (
            "image/*",
            "1.2.840.10008.1.2.4.90",
            (False, "image/jp2", "1.2.840.10008.1.2.4.90", False),
        ),
        # q-values beat order; an unmet entry falls through to the next
        (
            "image/jp2, multipart/related; type=image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50;q=0.9",
            JPEG,
            (True, "image/jpeg", JPEG, False),
        ),
        (f"{OCTET}; q=0.2, {AS_STORED}; q=0.8", JPEG, (True, "image/jpeg", JPEG, False)),
    ],
)
def test_frame_negotiation(accept: str | None, stored: str, expected: tuple[Any, ...]) -> None:
    choice = _choose(accept, stored)
    assert (choice.multipart, choice.media_type, choice.transfer_syntax, choice.decode) == expected


def test_image_jpeg_without_syntax_means_jpeg_lossless() -> None:
    with pytest.raises(NotAcceptable, match=r"image/jpeg in 1\.2\.840\.10008\.1\.2\.4\.70"):
        _choose('multipart/related; type="image/jpeg"', JPEG)


def test_single_part_is_for_one_frame_only() -> None:
    with pytest.raises(NotAcceptable, match="single part"):
        _choose("application/octet-stream", ELE, count=2)
    assert _choose(f"application/octet-stream, {OCTET}", ELE, count=2).multipart


def test_nothing_decodable_and_not_as_stored_is_406() -> None:
    with pytest.raises(NotAcceptable, match="cannot be decoded here"):
        _choose(None, "1.2.840.10008.1.2.4.100", servable=False, decodable=False)
    with pytest.raises(NotAcceptable, match="application/dicom is not offered"):
        _choose('multipart/related; type="application/dicom"')


# -- end to end --------------------------------------------------------------------

ENCAPSULATED = {
    "jpeg-baseline": lambda: renamed("SC_rgb_jpeg_dcmtk.dcm"),
    "jpeg-extended": lambda: renamed("JPGExtended.dcm"),
    "jpeg-lossless": lambda: renamed("SC_rgb_jpeg_gdcm.dcm"),
    "jpeg2000": lambda: renamed("JPEG2000.dcm"),
    "jpeg2000-3-fragments": lambda: renamed("examples_jpeg2k.dcm"),
    "jpeg-ls-lossless": lambda: renamed("MR_small_jpeg_ls_lossless.dcm"),
    "jpeg-ls-near-lossless": lambda: renamed("JPEGLSNearLossless_08.dcm"),
    "rle": lambda: renamed("MR_small_RLE.dcm"),
    "rle-2-frames": lambda: renamed("SC_rgb_rle_2frame.dcm"),
    "rle-15-frames-no-bot": lambda: renamed("rtdose_rle.dcm"),
    "jpeg-30-frames-bot": lambda: renamed("examples_ybr_color.dcm"),
    "jpeg-3-fragments-bot": lambda: refragmented(
        "examples_ybr_color.dcm", pieces=3, table="basic", frames=5
    ),
    "jpeg-extended-offsets": lambda: refragmented(
        "examples_ybr_color.dcm", pieces=1, table="extended", frames=5
    ),
    "jpeg-3-fragments-no-table": lambda: refragmented(
        "examples_ybr_color.dcm", pieces=3, table="none", frames=5
    ),
}
NATIVE = {
    "implicit-15-frames": lambda: renamed("rtdose.dcm"),
    "explicit": lambda: renamed("MR_small.dcm"),
    "odd-length-rgb": lambda: renamed("SC_rgb_small_odd.dcm"),
    "single-bit": lambda: renamed("liver_1frame.dcm"),
    "big-endian": lambda: renamed("MR_small_bigendian.dcm"),
    "big-endian-15-frames": lambda: renamed("rtdose_expb.dcm"),
    "deflated": lambda: renamed("image_dfl.dcm"),
}


@pytest.fixture(scope="module")
def stored(server: Any) -> dict[str, tuple[bytes, str]]:
    """Every test instance, STOWed once; name -> (bytes, instance path)."""
    made = {name: make() for name, make in (ENCAPSULATED | NATIVE).items()}
    made["no-pixels"] = make_instance(study=new_uid(), series=new_uid(), rows=0, cols=0)
    no_pixels = pydicom.dcmread(io.BytesIO(made["no-pixels"]))
    del no_pixels.PixelData
    out = io.BytesIO()
    no_pixels.save_as(out, enforce_file_format=True)
    made["no-pixels"] = out.getvalue()
    with httpx.Client(base_url=server.root, timeout=60) as client:
        r = client.post("/studies", content=multipart(*made.values()), headers=stow_headers())
        assert r.status_code == 200, r.text
    paths = {}
    for name, data in made.items():
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        paths[name] = (
            data,
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}",
        )
    return paths


def _native_frames(data: bytes, numbers: list[int]) -> list[bytes]:
    """Frames decoded by pydicom, as little endian native bytes."""
    ds = pydicom.dcmread(io.BytesIO(data))
    out = []
    for array in iter_pixels(ds, indices=[n - 1 for n in numbers]):
        if ds.BitsAllocated == 1:
            out.append(pack_bits(array))
        else:
            out.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return out


def _count(data: bytes) -> int:
    return int(
        pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).get("NumberOfFrames", 1) or 1
    )


@pytest.mark.parametrize("name", sorted(ENCAPSULATED))
def test_encapsulated_frames_as_stored(
    http: httpx.Client, stored: dict[str, tuple[bytes, str]], name: str
) -> None:
    data, path = stored[name]
    expected = reference_frames(data)
    numbers = list(range(len(expected), 0, -1))  # every frame, last first
    r = http.get(f"{path}/frames/{','.join(map(str, numbers))}", headers={"Accept": AS_STORED})
    assert r.status_code == 200, r.text
    syntax = str(pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID)
    parts = split(r)
    assert [p for _, p in parts] == [expected[n - 1] for n in numbers]
    media = r.headers["content-type"].split(";")[1].strip()
    for headers, _ in parts:
        assert (
            headers["content-type"]
            == f"{media.split('=')[1].strip(chr(34))}; transfer-syntax={syntax}"
        )
        assert media.split("=")[1].strip('"') != "application/octet-stream"


@pytest.mark.parametrize("name", sorted(ENCAPSULATED | NATIVE))
def test_frames_decoded_to_explicit_little_endian(
    http: httpx.Client, stored: dict[str, tuple[bytes, str]], name: str
) -> None:
    data, path = stored[name]
    numbers = [_count(data)] + ([1] if _count(data) > 1 else [])
    r = http.get(f"{path}/frames/{','.join(map(str, numbers))}")  # no Accept: the default
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(
        'multipart/related; type="application/octet-stream"'
    )
    parts = split(r)
    assert [p for _, p in parts] == _native_frames(data, numbers)
    assert {h["content-type"] for h, _ in parts} == {
        f"application/octet-stream; transfer-syntax={ELE}"
    }


@pytest.mark.parametrize("name", ["implicit-15-frames", "explicit", "odd-length-rgb", "single-bit"])
def test_native_frames_are_byte_ranges_of_pixel_data(
    http: httpx.Client, stored: dict[str, tuple[bytes, str]], name: str
) -> None:
    data, path = stored[name]
    ds = pydicom.dcmread(io.BytesIO(data))
    count = _count(data)
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    r = http.get(f"{path}/frames/{count}", headers={"Accept": AS_STORED})
    [(headers, payload)] = split(r)
    assert payload == ds.PixelData[(count - 1) * size : count * size]
    syntax = ds.file_meta.TransferSyntaxUID
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={syntax}"


def test_single_part_frame(http: httpx.Client, stored: dict[str, tuple[bytes, str]]) -> None:
    data, path = stored["jpeg-baseline"]
    r = http.get(f"{path}/frames/1", headers={"Accept": f"image/jpeg; transfer-syntax={JPEG}"})
    assert r.status_code == 200
    assert r.headers["content-type"] == f"image/jpeg; transfer-syntax={JPEG}"
    assert r.content == reference_frames(data)[0]
    data, path = stored["explicit"]
    r = http.get(f"{path}/frames/1", headers={"Accept": "application/octet-stream"})
    assert r.headers["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
    ds = pydicom.dcmread(io.BytesIO(data))
    assert r.content == ds.PixelData[: ds.Rows * ds.Columns * 2]


def test_bench_frame_request(http: httpx.Client, stored: dict[str, tuple[bytes, str]]) -> None:
    """What dicomweb_bench asks for."""
    data, path = stored["explicit"]
    r = http.get(f"{path}/frames/1", headers={"Accept": AS_STORED})
    assert r.status_code == 200
    assert [p for _, p in split(r)] == [pydicom.dcmread(io.BytesIO(data)).PixelData]


@pytest.mark.parametrize(
    ("frames", "status", "words"),
    [
        ("0", 400, "start at 1"),
        ("1,x", 400, "'x' is not a frame number"),
        ("1,1", 400, "listed twice"),
        ("-2", 400, "not a frame number"),
        ("16", 404, "frame 16 does not exist: instance"),
        ("1,99,2", 404, "frame 99 does not exist"),
    ],
)
def test_bad_frame_requests(
    http: httpx.Client, stored: dict[str, tuple[bytes, str]], frames: str, status: int, words: str
) -> None:
    _, path = stored["implicit-15-frames"]
    r = http.get(f"{path}/frames/{frames}")
    assert r.status_code == status
    assert words in r.json()["detail"]


def test_frame_beyond_a_deflated_instance_is_404(
    http: httpx.Client, stored: dict[str, tuple[bytes, str]]
) -> None:
    _, path = stored["deflated"]
    r = http.get(f"{path}/frames/2")
    assert r.status_code == 404
    assert "frame 2 does not exist" in r.json()["detail"]


def test_frames_of_instance_without_pixel_data(
    http: httpx.Client, stored: dict[str, tuple[bytes, str]]
) -> None:
    _, path = stored["no-pixels"]
    r = http.get(f"{path}/frames/1")
    assert r.status_code == 404
    assert "has no pixel data" in r.json()["detail"]


def test_frames_of_unknown_instance(
    http: httpx.Client, stored: dict[str, tuple[bytes, str]]
) -> None:
    _, path = stored["explicit"]
    r = http.get(path.rsplit("/", 1)[0] + f"/{new_uid()}/frames/1")
    assert r.status_code == 404
    assert "is not stored here" in r.json()["detail"]


@pytest.mark.parametrize(
    ("name", "accept", "words"),
    [
        ("explicit", f"image/jpeg; transfer-syntax={JPEG}", "image/jpeg in 1.2.840.10008.1.2.4.50"),
        ("jpeg-baseline", 'multipart/related; type="image/jls"', "image/jls in"),
        ("jpeg-baseline", "application/dicom", "not offered for frames"),
        ("rle-2-frames", "application/octet-stream", "single part"),
        ("explicit", "text/html", "not offered for frames"),
    ],
)
def test_unacceptable_frames_are_406(
    http: httpx.Client, stored: dict[str, tuple[bytes, str]], name: str, accept: str, words: str
) -> None:
    _, path = stored[name]
    r = http.get(
        f"{path}/frames/1,2" if name == "rle-2-frames" else f"{path}/frames/1",
        headers={"Accept": accept},
    )
    assert r.status_code == 406
    assert words in r.json()["detail"]


def test_decoded_frames_match_pixel_array(
    http: httpx.Client, stored: dict[str, tuple[bytes, str]]
) -> None:
    """YCbCr JPEG frames decode to RGB, as pydicom's pixel_array gives them."""
    data, path = stored["jpeg-30-frames-bot"]
    r = http.get(f"{path}/frames/7", headers={"Accept": OCTET})
    [(_, payload)] = split(r)
    expected = pydicom.dcmread(io.BytesIO(data)).pixel_array[6]
    assert np.array_equal(np.frombuffer(payload, dtype=np.uint8).reshape(expected.shape), expected)


def test_large_extended_offset_table(http: httpx.Client) -> None:
    """9,000 frames of two fragments each: the Extended Offset Table (72 KB, over the
    header parser's deferred-read size) is the only way to find where frames start."""
    frames = [bytes([n % 251]) * (8 * (1 + n % 7) - 2) + b"\xff\xd9" for n in range(9000)]
    with_bot = encapsulate(frames, fragments_per_frame=2, has_bot=True)
    offsets = struct.unpack("<9000I", with_bot[8 : 8 + 4 * 9000])
    source = refragmented("examples_ybr_color.dcm", pieces=1, table="none", frames=1)
    ds = pydicom.dcmread(io.BytesIO(source))
    ds.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=False)
    ds.ExtendedOffsetTable = struct.pack("<9000Q", *offsets)
    ds.ExtendedOffsetTableLengths = struct.pack("<9000Q", *(len(f) for f in frames))
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(frames), 1, 1
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    assert _table(data).starts == tuple(range(0, 18000, 2))
    r = http.post("/studies", content=multipart(data), headers=stow_headers())
    assert r.status_code == 200, r.text
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    r = http.get(f"{path}/frames/8765,2", headers={"Accept": AS_STORED})
    assert [p for _, p in split(r)] == [frames[8764], frames[1]]


def test_frames_that_cannot_be_told_apart_are_406(http: httpx.Client) -> None:
    """Three frames declared, two fragments, no offset table, no JPEG markers."""
    source = refragmented("examples_ybr_color.dcm", pieces=1, table="none", frames=1)
    ds = pydicom.dcmread(io.BytesIO(source))
    ds.PixelData = encapsulate([b"abcd" * 4], fragments_per_frame=2, has_bot=False)
    ds.NumberOfFrames = 3
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    r = http.post("/studies", content=multipart(out.getvalue()), headers=stow_headers())
    assert r.status_code == 200, r.text
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    r = http.get(f"{path}/frames/3", headers={"Accept": AS_STORED})
    assert r.status_code == 406
    assert "can be told apart" in r.json()["detail"]


def test_stored_frames_are_read_in_batches() -> None:
    ref = InstanceRef(
        store="default",
        study_uid="1",
        series_uid="2",
        sop_uid="3",
        sop_class_uid="4",
        transfer_syntax=ELE,
        blob_key="k",
        size=0,
        sha256="",
    )
    native = Layout(
        tag=0x7FE00010,
        vr="OW",
        element_offset=0,
        value_offset=12,
        length=60 << 20,
        frames=FrameTable(count=10, frame_bytes=6 << 20, native_length=6 << 20),
    )
    frames = FrameService(
        None,
        None,
        store="default",
        max_bytes=1,
        limiter=anyio.CapacityLimiter(1),  # type: ignore[arg-type]
    )
    source = FrameSource(ref=ref, layout=native, servable=True, decodable=True)
    assert frames.batches(source, [5, 1, 2, 9, 10]) == [[5, 1], [2, 9], [10]]
    fragments = tuple((100 + 20 * i, 10 << 20) for i in range(4))  # 10 MiB fragments
    encapsulated = Layout(
        tag=0x7FE00010,
        vr="OB",
        element_offset=0,
        value_offset=12,
        length=None,
        fragments=fragments,
        frames=FrameTable(count=2, frame_bytes=1, starts=(0, 1)),
    )
    source = FrameSource(ref=ref, layout=encapsulated, servable=True, decodable=True)
    assert frames.batches(source, [2, 1]) == [[2], [1]]  # 30 MiB, then 10 MiB
