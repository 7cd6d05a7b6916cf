"""Rendered and thumbnail resources end to end: real pydicom test files (native, RLE,
JPEG baseline and extended, JPEG 2000, JPEG-LS) stored by STOW-RS, fetched as JPEG or
PNG, decoded with Pillow and compared with references computed here from pydicom's own
decoding and VOI functions."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_windowing

from tests.dicomgen import encode, make_dataset, new_uid
from tests.helpers import multipart, pydicom_file, stow_headers
from tests.server import ServerProcess
from tests.test_wado import split

PNG = {"Accept": "image/png"}
Array = npt.NDArray[Any]


def restamp(name: str, study: str, series: str, number: int, **attrs: Any) -> bytes:
    """A pydicom test file under new UIDs (the bundled variants of MR_small share theirs),
    pixel data and transfer syntax untouched."""
    ds = pydicom.dcmread(io.BytesIO(pydicom_file(name)))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.InstanceNumber = number
    for key, value in attrs.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def to_uint8(values: Array) -> Array:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def windowed(name: str, center: float, width: float, function: str = "LINEAR") -> Array:
    """pydicom's windowing of a file's modality values, with an 8-bit output range."""
    ds = pydicom.dcmread(io.BytesIO(pydicom_file(name)))
    values = apply_modality_lut(ds.pixel_array, ds)
    view = Dataset()
    view.PhotometricInterpretation = "MONOCHROME2"
    view.BitsStored, view.PixelRepresentation = 8, 0
    view.WindowCenter, view.WindowWidth, view.VOILUTFunction = center, width, function
    return to_uint8(apply_windowing(values, view))


def picture(response: httpx.Response, fmt: str = "PNG") -> Array:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"image/{fmt.lower()}"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == fmt
    return np.asarray(image)


class Study:
    """One stored study: series 1 has no image; 2 MR_small in every lossless syntax and
    as MONOCHROME1; 3 colour; 4 multi-frame; 5 other syntaxes. Series 5's UID sorts
    first, so a study thumbnail that followed UIDs instead of Series Number would differ."""

    def __init__(self) -> None:
        self.uid = new_uid()
        self.series = {n: f"2.25.{n}{new_uid()[5:]}" for n in (1, 2, 3, 4)}
        self.series[5] = "2.25.1" + new_uid()[5:]
        self.sops: dict[str, str] = {}
        self.files: dict[str, bytes] = {}

    def add(self, key: str, data: bytes) -> None:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        self.sops[key] = str(ds.SOPInstanceUID)
        self.files[key] = data

    def path(self, key: str) -> str:
        ds = pydicom.dcmread(io.BytesIO(self.files[key]), stop_before_pixels=True)
        return f"/studies/{self.uid}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


_FILES = {
    # key: (file, series, instance number, extra attributes)
    "mr": ("MR_small.dcm", 2, 1, {"SeriesNumber": 2}),
    "mr_rle": ("MR_small_RLE.dcm", 2, 2, {"SeriesNumber": 2}),
    "mr_j2k": ("MR_small_jp2klossless.dcm", 2, 3, {"SeriesNumber": 2}),
    "mr_jls": ("MR_small_jpeg_ls_lossless.dcm", 2, 4, {"SeriesNumber": 2}),
    "mr_mono1": (
        "MR_small.dcm",
        2,
        5,
        {"SeriesNumber": 2, "PhotometricInterpretation": "MONOCHROME1"},
    ),
    "rgb_rle": ("SC_rgb_rle.dcm", 3, 1, {"SeriesNumber": 3}),
    "ybr_jpeg": ("SC_rgb_jpeg_dcmtk.dcm", 3, 2, {"SeriesNumber": 3}),
    "palette": ("examples_palette.dcm", 3, 3, {"SeriesNumber": 3}),
    "ybr_frames": ("examples_ybr_color.dcm", 4, 1, {"SeriesNumber": 4}),
    "rgb_2frame": ("SC_rgb_rle_2frame.dcm", 4, 2, {"SeriesNumber": 4}),
    "dose": ("rtdose.dcm", 4, 3, {"SeriesNumber": 4}),
    "ct": ("CT_small.dcm", 5, 1, {"SeriesNumber": 5}),
    "jpeg_ext": ("JPGExtended.dcm", 5, 2, {"SeriesNumber": 5}),
    "j2k": ("693_J2KI.dcm", 5, 3, {"SeriesNumber": 5}),
    "jls_near": ("JPEGLSNearLossless_08.dcm", 5, 4, {"SeriesNumber": 5}),
}


@pytest.fixture(scope="module")
def study(server: ServerProcess) -> Study:
    st = Study()
    for key, (name, series, number, attrs) in _FILES.items():
        st.add(key, restamp(name, st.uid, st.series[series], number, **attrs))
    no_image = make_dataset(study=st.uid, series=st.series[1], instance_number=1)
    no_image.SeriesNumber = 1
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored"):
        delattr(no_image, keyword)
    st.add("no_image", encode(no_image))
    with httpx.Client(base_url=server.root, timeout=60) as client:
        r = client.post("/studies", content=multipart(*st.files.values()), headers=stow_headers())
        assert r.status_code == 200, r.text
    return st


# -- grayscale pipeline ---------------------------------------------------------------


def test_instance_window_is_applied_exactly(http: httpx.Client, study: Study) -> None:
    got = picture(http.get(study.path("mr") + "/rendered", headers=PNG))
    assert got.shape == (64, 64)
    # MR_small carries Window Center 600, Width 1600.
    assert np.array_equal(got, windowed("MR_small.dcm", 600, 1600))


@pytest.mark.parametrize("key", ["mr_rle", "mr_j2k", "mr_jls"])
def test_lossless_syntaxes_render_like_the_native_file(
    http: httpx.Client, study: Study, key: str
) -> None:
    got = picture(http.get(study.path(key) + "/rendered", headers=PNG))
    assert np.array_equal(got, windowed("MR_small.dcm", 600, 1600))


@pytest.mark.parametrize(
    ("window", "function"),
    [
        ("1000,200", "LINEAR"),
        ("900,300,linear-exact", "LINEAR_EXACT"),
        ("800,400,sigmoid", "SIGMOID"),
    ],
)
def test_window_parameter(http: httpx.Client, study: Study, window: str, function: str) -> None:
    got = picture(http.get(study.path("mr") + "/rendered", params={"window": window}, headers=PNG))
    center, width = (float(v) for v in window.split(",")[:2])
    assert np.array_equal(got, windowed("MR_small.dcm", center, width, function))


def test_saturating_windows(http: httpx.Client, study: Study) -> None:
    low = http.get(study.path("ct") + "/rendered", params={"window": "-5000,1"}, headers=PNG)
    assert (picture(low) == 255).all()
    high = http.get(study.path("ct") + "/rendered", params={"window": "90000,10"}, headers=PNG)
    assert (picture(high) == 0).all()


def test_monochrome1_is_inverted(http: httpx.Client, study: Study) -> None:
    mono2 = picture(http.get(study.path("mr") + "/rendered", headers=PNG))
    mono1 = picture(http.get(study.path("mr_mono1") + "/rendered", headers=PNG))
    assert np.array_equal(mono1, 255 - mono2)


def test_without_window_the_frame_range_is_used(http: httpx.Client, study: Study) -> None:
    ds = pydicom.dcmread(io.BytesIO(pydicom_file("CT_small.dcm")))
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    expected = to_uint8((values - values.min()) / (values.max() - values.min()) * 255)
    got = picture(http.get(study.path("ct") + "/rendered", headers=PNG))
    assert got.shape == (128, 128)
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert got.min() == 0 and got.max() == 255


def test_32_bit_multi_frame_dose(http: httpx.Client, study: Study) -> None:
    ds = pydicom.dcmread(io.BytesIO(pydicom_file("rtdose.dcm")))
    frame = ds.pixel_array[2].astype(np.float64)
    got = picture(http.get(study.path("dose") + "/frames/3/rendered", headers=PNG))
    assert got.shape == (10, 10)
    expected = to_uint8((frame - frame.min()) / (frame.max() - frame.min()) * 255)
    assert np.abs(got.astype(int) - expected).max() <= 1


@pytest.mark.parametrize(
    ("key", "size"), [("jpeg_ext", (256, 1024)), ("j2k", (512, 512)), ("jls_near", (10, 45))]
)
def test_other_compressed_syntaxes(
    http: httpx.Client, study: Study, key: str, size: tuple[int, int]
) -> None:
    got = picture(http.get(study.path(key) + "/rendered"), "JPEG")
    assert got.shape == (size[1], size[0])
    assert got.max() > got.min()


# -- colour ---------------------------------------------------------------------------


def test_rgb_is_sent_unchanged(http: httpx.Client, study: Study) -> None:
    expected = pydicom.dcmread(io.BytesIO(pydicom_file("SC_rgb_rle.dcm"))).pixel_array
    got = picture(http.get(study.path("rgb_rle") + "/rendered", headers=PNG))
    assert got.shape == (100, 100, 3)
    assert np.array_equal(got, expected)


def test_ybr_jpeg_comes_out_as_rgb(http: httpx.Client, study: Study) -> None:
    rgb = pydicom.dcmread(io.BytesIO(pydicom_file("SC_rgb_rle.dcm"))).pixel_array
    got = picture(http.get(study.path("ybr_jpeg") + "/rendered", headers=PNG))
    # The same picture, JPEG-compressed in YBR_FULL: close to the RGB original.
    assert np.abs(got.astype(int) - rgb).mean() < 3


def test_palette_colour(http: httpx.Client, study: Study) -> None:
    ds = pydicom.dcmread(io.BytesIO(pydicom_file("examples_palette.dcm")))
    expected = to_uint8(apply_color_lut(ds.pixel_array, ds) / 257)
    got = picture(http.get(study.path("palette") + "/rendered", headers=PNG))
    assert got.shape == (350, 800, 3)
    assert np.array_equal(got, expected)


def test_frames_of_a_multi_frame_jpeg(http: httpx.Client, study: Study) -> None:
    frames = pydicom.dcmread(io.BytesIO(pydicom_file("examples_ybr_color.dcm"))).pixel_array
    fifth = picture(http.get(study.path("ybr_frames") + "/frames/5/rendered", headers=PNG))
    assert np.array_equal(fifth, frames[4])
    # An instance is rendered by its first frame.
    whole = picture(http.get(study.path("ybr_frames") + "/rendered", headers=PNG))
    assert np.array_equal(whole, frames[0])


def test_frame_list_is_multipart(http: httpx.Client, study: Study, server: ServerProcess) -> None:
    frames = pydicom.dcmread(io.BytesIO(pydicom_file("SC_rgb_rle_2frame.dcm"))).pixel_array
    r = http.get(
        study.path("rgb_2frame") + "/frames/2,1/rendered",
        headers={"Accept": 'multipart/related; type="image/png"'},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith('multipart/related; type="image/png"')
    parts = split(r)
    assert [
        np.array_equal(np.asarray(Image.open(io.BytesIO(p))), frames[i])
        for i, (_, p) in zip((1, 0), parts, strict=True)
    ] == [True, True]
    locations = [h["content-location"] for h, _ in parts]
    assert locations == [
        f"{server.root}{study.path('rgb_2frame')}/frames/{n}/rendered" for n in (2, 1)
    ]


# -- encoding, viewport, negotiation --------------------------------------------------


def test_default_is_jpeg_of_the_image_size(http: httpx.Client, study: Study) -> None:
    image = Image.open(io.BytesIO(http.get(study.path("ct") + "/rendered").content))
    assert (image.format, image.mode, image.size) == ("JPEG", "L", (128, 128))
    image = Image.open(io.BytesIO(http.get(study.path("rgb_rle") + "/rendered").content))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (100, 100))


def test_quality_changes_the_size(http: httpx.Client, study: Study) -> None:
    sizes = [
        len(http.get(study.path("j2k") + "/rendered", params={"quality": q}).content)
        for q in ("10", "50", "95")
    ]
    assert sizes[0] < sizes[1] < sizes[2]


@pytest.mark.parametrize(
    ("viewport", "size"),
    [("32,16", (16, 16)), ("200,100", (100, 100)), ("50,80", (50, 50)), ("400,200", (200, 200))],
)
def test_viewport_fits_keeping_aspect(
    http: httpx.Client, study: Study, viewport: str, size: tuple[int, int]
) -> None:
    got = picture(
        http.get(study.path("rgb_rle") + "/rendered", params={"viewport": viewport}, headers=PNG)
    )
    assert (got.shape[1], got.shape[0]) == size


def test_viewport_source_region_and_flip(http: httpx.Client, study: Study) -> None:
    full = windowed("MR_small.dcm", 600, 1600)
    path = study.path("mr") + "/rendered"
    corner = picture(http.get(path, params={"viewport": "20,10,8,4,20,10"}, headers=PNG))
    assert np.array_equal(corner, full[4:14, 8:28])
    flipped = picture(http.get(path, params={"viewport": "64,64,64,,-64,"}, headers=PNG))
    assert np.array_equal(flipped, full[:, ::-1])
    upside_down = picture(http.get(path, params={"viewport": "64,64,0,64,64,-64"}, headers=PNG))
    assert np.array_equal(upside_down, full[::-1])


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("image/png", "PNG"),
        ("image/jpeg", "JPEG"),
        ("*/*", "JPEG"),
        ("image/*", "JPEG"),
        ("text/html, image/png;q=0.5", "PNG"),
        ("image/png;q=0.4, image/jpeg;q=0.9", "JPEG"),
    ],
)
def test_accept_negotiation(http: httpx.Client, study: Study, accept: str, fmt: str) -> None:
    picture(http.get(study.path("mr") + "/rendered", headers={"Accept": accept}), fmt)


def test_unacceptable_types_are_406(http: httpx.Client, study: Study) -> None:
    for accept in ("image/gif", "application/dicom", 'multipart/related; type="image/gif"'):
        r = http.get(study.path("mr") + "/rendered", headers={"Accept": accept})
        assert r.status_code == 406, accept
        assert "image/jpeg or image/png" in r.json()["detail"]


def test_annotation_is_ignored_with_a_warning(http: httpx.Client, study: Study) -> None:
    r = http.get(study.path("mr") + "/rendered", params={"annotation": "patient"})
    picture(r, "JPEG")
    assert r.headers["warning"].startswith("299 ")
    assert "annotation" in r.headers["warning"]


# -- study, series, thumbnails ----------------------------------------------------------


def test_series_and_study_rendered_are_multipart(http: httpx.Client, study: Study) -> None:
    r = http.get(
        f"/studies/{study.uid}/series/{study.series[2]}/rendered", headers={"Accept": "*/*"}
    )
    assert r.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    parts = split(r)
    assert len(parts) == 5
    assert all(Image.open(io.BytesIO(p)).size == (64, 64) for _, p in parts)
    r = http.get(
        f"/studies/{study.uid}/rendered",
        params={"viewport": "32,32"},
        headers={"Accept": 'multipart/related; type="image/jpeg"'},
    )
    parts = split(r)
    # Every image instance once, the instance without pixel data left out.
    assert len(parts) == len(_FILES)
    assert all(max(Image.open(io.BytesIO(p)).size) == 32 for _, p in parts)


def test_thumbnails(http: httpx.Client, study: Study) -> None:
    def size(path: str, **params: str) -> tuple[int, int]:
        r = http.get(path + "/thumbnail", params=params)
        image = Image.open(io.BytesIO(r.content))
        assert image.format == "JPEG", r.text
        return image.size

    assert size(study.path("j2k")) == (128, 128)
    assert size(study.path("palette")) == (128, 56)
    assert size(study.path("mr")) == (64, 64)  # never enlarged
    assert size(study.path("j2k"), viewport="300,300") == (300, 300)
    assert size(study.path("ybr_frames") + "/frames/2") == (128, 96)


def test_series_and_study_thumbnails_show_the_middle_image(
    http: httpx.Client, study: Study
) -> None:
    middle = http.get(study.path("mr_j2k") + "/thumbnail", headers=PNG).content
    series = http.get(f"/studies/{study.uid}/series/{study.series[2]}/thumbnail", headers=PNG)
    assert series.content == middle
    # Series 1 holds no image; series 2 comes before series 5 by Series Number.
    assert http.get(f"/studies/{study.uid}/thumbnail", headers=PNG).content == middle


# -- bad requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"quality": "0"}, "quality"),
        ({"quality": "high"}, "quality"),
        ({"quality": "²"}, "quality"),
        ({"window": "40"}, "window"),
        ({"window": "a,b"}, "window"),
        ({"window": "40,0"}, "window"),
        ({"window": "40,0.5,linear"}, "window"),
        ({"window": "40,100,cubic"}, "window"),
        ({"window": "nan,100"}, "window"),
        ({"viewport": "64"}, "viewport"),
        ({"viewport": "0,64"}, "viewport"),
        ({"viewport": "5000,64"}, "viewport"),
        ({"viewport": "64,64,0,0,0,10"}, "viewport"),
        ({"viewport": "64,64,-1,0,10,10"}, "viewport"),
        ({"viewport": "64,64,x,0,10,10"}, "viewport"),
        ({"viewport": "64,²"}, "viewport"),
        ({"viewport": "64,64,500,500,10,10"}, "viewport"),
    ],
)
def test_bad_parameters_are_400(
    http: httpx.Client, study: Study, params: dict[str, str], named: str
) -> None:
    for resource in ("/rendered", "/thumbnail"):
        r = http.get(study.path("mr") + resource, params=params)
        assert r.status_code == 400, (resource, params, r.text)
        assert r.json()["detail"].startswith(named)


@pytest.mark.parametrize("frames", ["0", "a", "1,,2", "-1", "1.5", "²"])
def test_malformed_frame_lists_are_400(http: httpx.Client, study: Study, frames: str) -> None:
    r = http.get(study.path("ybr_frames") + f"/frames/{frames}/rendered")
    assert r.status_code == 400
    assert "frame list" in r.json()["detail"]


def test_missing_frame_is_404(http: httpx.Client, study: Study) -> None:
    for resource in ("rendered", "thumbnail"):
        r = http.get(study.path("ybr_frames") + f"/frames/2,31/{resource}")
        assert r.status_code == 404
        assert "frame 31" in r.json()["detail"] and "30 frames" in r.json()["detail"]
    r = http.get(study.path("mr") + "/frames/2/rendered")
    assert r.status_code == 404 and "1 frame" in r.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/studies/1.2.3.999/rendered",
        "/studies/1.2.3.999/thumbnail",
        "/studies/{study}/series/1.2.3.999/rendered",
        "/studies/{study}/series/{series}/instances/1.2.3.999/thumbnail",
        "/studies/{study}/series/{series}/instances/1.2.3.999/frames/1/rendered",
    ],
)
def test_unknown_uids_are_404(http: httpx.Client, study: Study, path: str) -> None:
    r = http.get(path.format(study=study.uid, series=study.series[2]))
    assert r.status_code == 404
    assert "1.2.3.999" in r.json()["detail"]


def test_malformed_uid_is_400(http: httpx.Client) -> None:
    assert http.get("/studies/1.2.x/rendered").status_code == 400


def test_instance_without_pixel_data_is_404(http: httpx.Client, study: Study) -> None:
    for resource in ("rendered", "thumbnail"):
        r = http.get(f"{study.path('no_image')}/{resource}")
        assert r.status_code == 404
        assert "no pixel data" in r.json()["detail"]
    for resource in ("rendered", "thumbnail"):
        r = http.get(f"/studies/{study.uid}/series/{study.series[1]}/{resource}")
        assert r.status_code == 404
        assert r.json()["detail"].startswith(f"series {study.series[1]} in study")
        assert "holds no image" in r.json()["detail"]


def test_undecodable_pixel_data_is_406(http: httpx.Client) -> None:
    # JPEG-lossy.dcm's 12-bit JPEG stream is refused by every installed decoder.
    uid, series = new_uid(), new_uid()
    data = restamp("JPEG-lossy.dcm", uid, series, 1)
    assert http.post("/studies", content=multipart(data), headers=stow_headers()).status_code == 200
    sop = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
    r = http.get(f"/studies/{uid}/series/{series}/instances/{sop}/rendered")
    assert r.status_code == 406
    detail = r.json()["detail"]
    assert "cannot be decoded" in detail and "1.2.840.10008.1.2.4.51" in detail


def test_large_instances_are_spooled_to_disk(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(render_memory_bytes="1024")
    uid, series = new_uid(), new_uid()
    data = restamp("MR_small_RLE.dcm", uid, series, 1)
    sop = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
    with httpx.Client(base_url=server.root, timeout=60) as client:
        r = client.post("/studies", content=multipart(data), headers=stow_headers())
        assert r.status_code == 200
        got = picture(
            client.get(f"/studies/{uid}/series/{series}/instances/{sop}/rendered", headers=PNG)
        )
    assert np.array_equal(got, windowed("MR_small.dcm", 600, 1600))


def test_study_without_images_is_404(http: httpx.Client) -> None:
    ds = make_dataset()
    del ds.PixelData
    assert (
        http.post("/studies", content=multipart(encode(ds)), headers=stow_headers()).status_code
        == 200
    )
    for resource in ("rendered", "thumbnail"):
        r = http.get(f"/studies/{ds.StudyInstanceUID}/{resource}")
        assert r.status_code == 404
        assert r.json()["detail"].startswith(f"study {ds.StudyInstanceUID} holds no image")


def test_multipart_can_be_asked_for_one_instance(http: httpx.Client, study: Study) -> None:
    r = http.get(
        study.path("mr") + "/rendered", headers={"Accept": 'multipart/related; type="image/png"'}
    )
    [(headers, body)] = split(r)
    assert headers["content-type"] == "image/png"
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(body))), windowed("MR_small.dcm", 600, 1600)
    )


def _store(http: httpx.Client, ds: Dataset) -> str:
    r = http.post("/studies", content=multipart(encode(ds)), headers=stow_headers())
    assert r.status_code == 200, r.text
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_palette_without_its_tables_is_406(http: httpx.Client) -> None:
    ds = make_dataset(rows=8, cols=8)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    r = http.get(_store(http, ds) + "/rendered")
    assert r.status_code == 406
    assert "pixel attributes cannot be applied" in r.json()["detail"]


def test_frames_too_large_to_draw_are_406(http: httpx.Client) -> None:
    # The header claims 10000 x 10000 pixels; refused from the metadata, unread.
    ds = make_dataset(rows=2, cols=2)
    ds.Rows = ds.Columns = 10_000
    r = http.get(_store(http, ds) + "/thumbnail")
    assert r.status_code == 406
    assert "100000000 pixels per frame" in r.json()["detail"]


def test_dicomweb_client_interoperates(server: ServerProcess, study: Study) -> None:
    client = DICOMwebClient(url=server.root)
    ds = pydicom.dcmread(io.BytesIO(study.files["mr"]), stop_before_pixels=True)
    png = client.retrieve_instance_rendered(
        study.uid,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        media_types=("image/png",),
        params={"window": "1000,200"},
    )
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(png))), windowed("MR_small.dcm", 1000, 200)
    )
    ds = pydicom.dcmread(io.BytesIO(study.files["ybr_frames"]), stop_before_pixels=True)
    jpeg = client.retrieve_instance_frames_rendered(
        study.uid, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[7]
    )
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (320, 240))
    series = client.retrieve_series_rendered(
        study.uid, study.series[2], media_types=("image/jpeg",)
    )
    image = Image.open(io.BytesIO(series))
    assert (image.format, image.mode, image.size) == ("JPEG", "L", (64, 64))


def test_an_image_type_gets_one_picture_of_several(http: httpx.Client, study: Study) -> None:
    # A series or study as one picture: the image its thumbnail shows, at full size.
    middle = http.get(study.path("mr_j2k") + "/rendered", headers=PNG).content
    series = http.get(f"/studies/{study.uid}/series/{study.series[2]}/rendered", headers=PNG)
    assert series.headers["content-type"] == "image/png" and series.content == middle
    assert http.get(f"/studies/{study.uid}/rendered", headers=PNG).content == middle
    frames = pydicom.dcmread(io.BytesIO(pydicom_file("SC_rgb_rle_2frame.dcm"))).pixel_array
    r = http.get(study.path("rgb_2frame") + "/frames/2,1/rendered", headers={"Accept": "image/*"})
    assert np.array_equal(picture(r, "JPEG").shape, frames[1].shape)
    r = http.get(study.path("rgb_2frame") + "/frames/2,1/rendered", headers=PNG)
    assert np.array_equal(picture(r), frames[1])
    r = http.get(study.path("rgb_2frame") + "/frames/1,3/rendered", headers=PNG)
    assert r.status_code == 404 and "frame 3" in r.json()["detail"]


def test_etag_and_if_none_match(http: httpx.Client, study: Study) -> None:
    path = study.path("ct") + "/thumbnail"
    first = http.get(path)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert http.get(path).headers["etag"] == etag
    again = http.get(path, headers={"If-None-Match": f'"other", W/{etag}'})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    others = {
        http.get(path, params={"quality": "50"}).headers["etag"],
        http.get(path, headers=PNG).headers["etag"],
        http.get(study.path("ct") + "/rendered").headers["etag"],
        http.get(study.path("mr") + "/thumbnail").headers["etag"],
    }
    assert len(others) == 4 and etag not in others
    assert http.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.embedded_only
def test_not_modified_does_not_read_the_file(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    uid, series = new_uid(), new_uid()
    data = restamp("CT_small.dcm", uid, series, 1)
    sop = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
    path = f"/studies/{uid}/series/{series}/instances/{sop}/rendered"
    with httpx.Client(base_url=server.root, timeout=60) as client:
        assert (
            client.post("/studies", content=multipart(data), headers=stow_headers()).status_code
            == 200
        )
        etag = client.get(path).headers["etag"]
        [blob] = (server.data_dir / "blobs").rglob(f"{sop}.dcm")
        blob.unlink()
        assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
        assert client.get(path).status_code >= 500  # the file is gone: it was not read above
