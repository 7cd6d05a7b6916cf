"""The pixel pipeline of service.imaging.render on synthetic frames, for the LUT and
bit-depth cases the bundled test files do not cover; references from pydicom."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_voi, apply_windowing

from service.imaging.render import (
    PNG,
    RegionOutside,
    Viewport,
    Window,
    apply_window,
    display_pixels,
    encode,
    fit,
)


def mono(bits_stored: int = 12, signed: bool = False, **attrs: Any) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(("center", "width"), [(100.0, 1.0), (0.0, 2.0), (-50.5, 300.0)])
def test_window_formulas_match_pydicom(function: str, center: float, width: float) -> None:
    values = np.linspace(-600, 600, 2401)
    view = mono(8, WindowCenter=center, WindowWidth=width, VOILUTFunction=function)
    with np.errstate(over="ignore"):
        expected = apply_windowing(values, view)
    ours = apply_window(values, Window(center, width, function.lower().replace("_", "-")))  # type: ignore[arg-type]
    assert np.allclose(ours, expected, atol=1e-9)


def test_bits_above_bits_stored_are_masked() -> None:
    arr = np.array([[0xF000 | 0, 0xF000 | 4095]], dtype=np.uint16)
    out = display_pixels(arr, mono(12))
    assert out.tolist() == [[0, 255]]


def test_signed_with_rescale_and_window() -> None:
    arr = np.array([[-1024, 0, 1023]], dtype=np.int16)
    ds = mono(
        16, signed=True, RescaleSlope=2, RescaleIntercept=10, WindowCenter=10, WindowWidth=100
    )
    # modality values -2038, 10, 2056; linear: ((10 - 9.5) / 99 + 0.5) * 255 = 128.8
    assert display_pixels(arr, ds).tolist() == [[0, 129, 255]]


def test_modality_lut_sequence_then_instance_window() -> None:
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.ModalityLUTType = "US"
    item.LUTData = [0, 1000, 2000, 3000]
    ds = mono(8, WindowCenter=1500.5, WindowWidth=2001)
    ds.ModalityLUTSequence = [item]
    arr = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    assert display_pixels(arr, ds).tolist() == [[0, 64, 191, 255]]


def test_voi_lut_sequence_is_scaled_from_its_depth() -> None:
    item = Dataset()
    item.LUTDescriptor = [4, 0, 12]
    item.LUTData = [0, 1365, 2730, 4095]
    ds = mono(8)
    ds.VOILUTSequence = [item]
    arr = np.array([[0, 1, 2, 3, 9]], dtype=np.uint16)
    expected = np.rint(apply_voi(arr, ds).astype(np.float64) * 255 / 4095)
    assert display_pixels(arr, ds).tolist() == expected.astype(int).tolist()
    assert display_pixels(arr, ds).tolist() == [[0, 85, 170, 255, 255]]


def test_window_parameter_beats_the_instance_window() -> None:
    ds = mono(8, WindowCenter=0, WindowWidth=10)
    arr = np.array([[100, 200]], dtype=np.uint16)
    assert display_pixels(arr, ds).tolist() == [[255, 255]]
    assert display_pixels(arr, ds, Window(150, 100, "linear-exact")).tolist() == [[0, 255]]


def test_constant_frame_without_window_is_black() -> None:
    arr = np.full((2, 2), 7, dtype=np.uint16)
    assert display_pixels(arr, mono(8)).tolist() == [[0, 0], [0, 0]]


def test_monochrome1_inverts_after_voi() -> None:
    arr = np.array([[0, 255]], dtype=np.uint16)
    ds = mono(8, PhotometricInterpretation="MONOCHROME1")
    assert display_pixels(arr, ds).tolist() == [[255, 0]]


def test_sixteen_bit_rgb_is_scaled() -> None:
    arr = np.array([[[0, 32768, 65535]]], dtype=np.uint16)
    ds = mono(16, PhotometricInterpretation="RGB", SamplesPerPixel=3)
    assert display_pixels(arr, ds).tolist() == [[[0, 128, 255]]]


def test_fit_and_source_regions() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert fit(pixels, Viewport(8, 8)).shape == (6, 8)
    assert fit(pixels, Viewport(8, 8), shrink_only=True).shape == (3, 4)
    assert fit(pixels, Viewport(2, 1, 1, 1, 2, 1)).tolist() == [[5, 6]]
    assert fit(pixels, Viewport(4, 3, 4, 0, -4, None)).tolist() == pixels[:, ::-1].tolist()
    # a region partly outside is clipped to the image
    assert fit(pixels, Viewport(2, 1, 2, 2, 10, 10)).tolist() == [[10, 11]]
    with pytest.raises(RegionOutside):
        fit(pixels, Viewport(2, 2, 5, 5, 2, 2))


def test_png_is_lossless() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = Image.open(io.BytesIO(encode(pixels, PNG)))
    assert np.array_equal(np.asarray(image), pixels)
