"""Transcoding: the pure module with pydicom's compressed test files, and WADO-RS
instance/series retrieval through a real server that transcodes what it must."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from service.dicomweb.media import choose_instance_media
from service.errors import NotAcceptable, NotFound
from service.imaging.transcode import can_transcode, decode_frames, transcode
from tests.dicomgen import make_instance, new_uid
from tests.framegen import renamed
from tests.helpers import multipart, stow_headers
from tests.server import ServerProcess
from tests.test_wado import split

ELE = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
BIG = 1 << 30

# name -> lossless source (pixels must come back identical to the original's)
SOURCES = {
    "SC_rgb_jpeg_dcmtk.dcm": False,  # JPEG baseline, YBR_FULL
    "SC_rgb_dcmtk_+eb+cy+np.dcm": False,  # JPEG baseline, YBR_FULL_422
    "JPGExtended.dcm": False,  # JPEG extended, 12 bit
    "SC_rgb_jpeg_gdcm.dcm": True,  # JPEG lossless SV1
    "JPEG2000.dcm": False,
    "MR_small_jp2klossless.dcm": True,
    "examples_jpeg2k.dcm": True,  # one frame in three fragments
    "MR_small_jpeg_ls_lossless.dcm": True,
    "JPEGLSNearLossless_08.dcm": False,
    "MR_small_RLE.dcm": True,
    "SC_rgb_rle_2frame.dcm": True,
    "rtdose_rle.dcm": True,
    "examples_ybr_color.dcm": False,  # 30 frames
    "MR_small_bigendian.dcm": True,
    "rtdose_expb.dcm": True,
    "liver_expb_1frame.dcm": True,  # single-bit, big endian
    "ExplVR_BigEnd.dcm": True,
    "image_dfl.dcm": True,
    "MR_small_implicit.dcm": True,
}
LOSSY_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"}


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(pydicom.dcmread(io.BytesIO(data)).pixel_array)


# rtdose_expb.dcm carries an invalid UI value, which pydicom warns about and we keep.
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("target", [ELE, IMPLICIT])
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_transcode_decodes_to_the_same_pixels(name: str, target: str) -> None:
    data = renamed(name)
    source = pydicom.dcmread(io.BytesIO(data))
    out = pydicom.dcmread(io.BytesIO(transcode(data, target, max_bytes=BIG)))
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == source.SOPInstanceUID
    # pydicom's own decode of the source is the reference: for lossless sources that is
    # the original image; for lossy ones, what any decoder here would produce.
    assert np.array_equal(out.pixel_array, source.pixel_array)
    if str(source.file_meta.TransferSyntaxUID) in LOSSY_SYNTAXES:
        assert out.LossyImageCompression == "01"
    if (
        source.get("PhotometricInterpretation", "").startswith("YBR")
        and source.file_meta.TransferSyntaxUID.is_compressed
    ):
        assert out.PhotometricInterpretation == "RGB"
    if out.get("SamplesPerPixel", 1) > 1:
        assert out.PlanarConfiguration == 0
    assert (
        len(out.PixelData)
        >= out.Rows
        * out.Columns
        * out.SamplesPerPixel
        * int(out.get("NumberOfFrames", 1) or 1)
        * out.BitsAllocated
        // 8
    )


def test_lossless_sources_give_back_the_original_pixels() -> None:
    """RLE and JPEG-LS lossless copies of MR_small decode to MR_small's own pixels."""
    original = _pixels(renamed("MR_small.dcm"))
    for name in (
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ):
        assert np.array_equal(_pixels(transcode(renamed(name), ELE, max_bytes=BIG)), original), name


def test_transcode_refuses_over_the_limit() -> None:
    with pytest.raises(NotAcceptable, match="over the limit"):
        transcode(renamed("JPEG2000.dcm"), ELE, max_bytes=100_000)  # 512 KB decoded
    with pytest.raises(NotAcceptable, match="not offered"):
        transcode(renamed("MR_small.dcm"), "1.2.840.10008.1.2.4.50", max_bytes=BIG)


def test_decode_frames() -> None:
    data = renamed("SC_rgb_rle_2frame.dcm")
    second, first = decode_frames(data, [2, 1], max_bytes=BIG)
    pixels = _pixels(data)
    assert (first, second) == (pixels[0].tobytes(), pixels[1].tobytes())
    with pytest.raises(NotFound, match="frame 3 does not exist"):
        decode_frames(data, [3], max_bytes=BIG)


def test_can_transcode() -> None:
    assert can_transcode("1.2.840.10008.1.2.4.80", ELE)
    assert can_transcode("1.2.840.10008.1.2.2", IMPLICIT)
    assert not can_transcode("1.2.840.10008.1.2.4.100", ELE)  # MPEG-2: no decoder
    assert not can_transcode(ELE, "1.2.840.10008.1.2.4.50")  # no encoders offered


def test_instance_negotiation_with_transcoding() -> None:
    jpeg = {"1.2.840.10008.1.2.4.50", ELE}
    choice = choose_instance_media(None, jpeg, single_part_ok=False, can_transcode=can_transcode)
    assert (choice.multipart, choice.transfer_syntax) == (True, ELE)
    with pytest.raises(NotAcceptable, match="cannot be transcoded"):
        choose_instance_media(
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
            jpeg,
            single_part_ok=False,
            can_transcode=can_transcode,
        )


# -- end to end --------------------------------------------------------------------

DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _path(data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def _as_series(study: str, series: str, data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def series(server: Any) -> dict[str, Any]:
    """One series mixing compressed, big endian, deflated and native instances."""
    study, uid = new_uid(), new_uid()
    names = [
        "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "JPEG2000.dcm",
        "MR_small_bigendian.dcm",
        "image_dfl.dcm",
        "MR_small_implicit.dcm",
    ]
    instances = [_as_series(study, uid, renamed(n)) for n in names]
    instances.append(make_instance(study=study, series=uid, rows=8, cols=8))
    with httpx.Client(base_url=server.root, timeout=60) as client:
        r = client.post("/studies", content=multipart(*instances), headers=stow_headers())
        assert r.status_code == 200, r.text
    return {"study": study, "series": uid, "instances": instances}


def _by_sop(parts: list[tuple[dict[str, str], bytes]]) -> dict[str, tuple[str, Any]]:
    out = {}
    for headers, payload in parts:
        ds = pydicom.dcmread(io.BytesIO(payload))
        out[str(ds.SOPInstanceUID)] = (headers["content-type"], ds)
    return out


def test_series_default_accept_is_all_explicit_little_endian(
    http: httpx.Client, series: dict[str, Any]
) -> None:
    r = http.get(f"/studies/{series['study']}/series/{series['series']}")
    assert r.status_code == 200, r.text
    got = _by_sop(split(r))
    assert len(got) == len(series["instances"])
    for data in series["instances"]:
        source = pydicom.dcmread(io.BytesIO(data))
        content_type, ds = got[str(source.SOPInstanceUID)]
        assert content_type == f"application/dicom; transfer-syntax={ELE}"
        assert ds.file_meta.TransferSyntaxUID == ELE
        assert np.array_equal(ds.pixel_array, source.pixel_array)


def test_stored_explicit_instances_are_not_rewritten(
    http: httpx.Client, series: dict[str, Any]
) -> None:
    native = series["instances"][-1]
    r = http.get(_path(native), headers={"Accept": 'multipart/related; type="application/dicom"'})
    [(_, payload)] = split(r)
    assert payload == native


def test_single_part_transcoded_instance(http: httpx.Client, series: dict[str, Any]) -> None:
    data = series["instances"][1]  # RLE
    r = http.get(_path(data), headers={"Accept": "application/dicom"})
    assert r.status_code == 200
    assert r.headers["content-type"] == f"application/dicom; transfer-syntax={ELE}"
    assert int(r.headers["content-length"]) == len(r.content)
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert ds.file_meta.TransferSyntaxUID == ELE
    assert np.array_equal(ds.pixel_array, _pixels(data))


def test_implicit_target(http: httpx.Client, series: dict[str, Any]) -> None:
    data = series["instances"][2]  # JPEG-LS lossless
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={IMPLICIT}'
    [(headers, payload)] = split(http.get(_path(data), headers={"Accept": accept}))
    assert headers["content-type"] == f"application/dicom; transfer-syntax={IMPLICIT}"
    ds = pydicom.dcmread(io.BytesIO(payload))
    assert ds.file_meta.TransferSyntaxUID == IMPLICIT
    assert np.array_equal(ds.pixel_array, _pixels(data))


def test_as_stored_is_byte_identical(http: httpx.Client, series: dict[str, Any]) -> None:
    r = http.get(f"/studies/{series['study']}", headers={"Accept": DICOM_ANY})
    assert sorted(p for _, p in split(r)) == sorted(series["instances"])


@pytest.mark.parametrize(
    ("accept", "words"),
    [
        (
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
            "cannot be transcoded to it here",
        ),
        (
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.2',
            "cannot be transcoded to it here",
        ),
    ],
)
def test_unproducible_syntax_is_406(
    http: httpx.Client, series: dict[str, Any], accept: str, words: str
) -> None:
    r = http.get(f"/studies/{series['study']}", headers={"Accept": accept})
    assert r.status_code == 406
    assert words in r.json()["detail"]


def test_transcoding_size_limit(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(transcode_max_bytes="100000")
    data = renamed("JPEG2000.dcm")  # 1024 x 256 x 16 bit: 512 KB decoded
    with httpx.Client(base_url=server.root, timeout=60) as client:
        client.post("/studies", content=multipart(data), headers=stow_headers())
        r = client.get(_path(data))
        assert r.status_code == 406
        assert "DICOMWEB_TRANSCODE_MAX_BYTES" in r.json()["detail"]
        r = client.get(_path(data) + "/frames/1")
        assert r.status_code == 406
        assert "DICOMWEB_TRANSCODE_MAX_BYTES" in r.json()["detail"]
        [(_, payload)] = split(client.get(_path(data), headers={"Accept": DICOM_ANY}))
        assert payload == data


def test_undecodable_pixel_data_is_406_with_advice() -> None:
    ds = pydicom.dcmread(io.BytesIO(renamed("SC_rgb_jpeg_dcmtk.dcm")))
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(NotAcceptable, match=r"cannot be decoded here.*transfer-syntax=\*"):
        transcode(out.getvalue(), ELE, max_bytes=BIG)
    with pytest.raises(NotAcceptable, match="cannot be decoded here"):
        decode_frames(out.getvalue(), [1], max_bytes=BIG)
