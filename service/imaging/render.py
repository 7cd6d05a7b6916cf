"""Rendering one frame of a DICOM image as a consumer-format picture (PS3.18 §8.3.5).

Pure functions: a Part 10 file (path or file object) and a frame number in, JPEG or
PNG bytes out. The pixel pipeline follows PS3.3 C.11 / C.7.6.3:

1. decode only the requested frame (pydicom, through whichever plugin handles the
   transfer syntax); YBR data comes back as RGB (pydicom's default ``as_rgb``);
2. grayscale: Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence), then
   VOI: the requested window, else the first Window Center/Width of the instance, else
   its VOI LUT Sequence, else the frame's own minimum..maximum; MONOCHROME1 inverted;
3. PALETTE COLOR through its lookup tables; RGB of more than 8 bits scaled to 8;
4. optionally cut a source rectangle (flipped when its width or height is negative)
   and scale it to fit a viewport, keeping the aspect ratio;
5. encode: 8-bit grayscale (``L``) or RGB, as JPEG (with a quality) or PNG.

Everything here blocks; callers run it in a worker thread.
"""

from __future__ import annotations

import io
from typing import IO, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.pixels.utils import pixel_array

__all__ = [
    "JPEG",
    "MEDIA_TYPES",
    "PIPELINE_VERSION",
    "PNG",
    "CannotRender",
    "RegionOutside",
    "RenderOptions",
    "Viewport",
    "Window",
    "display_pixels",
    "encode",
    "fit",
    "render_frame",
]

#: Changes whenever the same request would draw a different picture (for ETags).
PIPELINE_VERSION = 1
JPEG = "image/jpeg"
PNG = "image/png"
MEDIA_TYPES = (JPEG, PNG)

WindowFunction = Literal["linear", "linear-exact", "sigmoid"]


class Window(NamedTuple):
    """A VOI window (PS3.3 C.11.2.1.2) in modality (rescaled) units."""

    center: float
    width: float
    function: WindowFunction = "linear"


class Viewport(NamedTuple):
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 §8.3.5.1.3). Source fields are None
    when not given; a negative ``sw`` / ``sh`` flips the image on that axis."""

    width: int
    height: int
    sx: int | None = None
    sy: int | None = None
    sw: int | None = None
    sh: int | None = None


class RenderOptions(NamedTuple):
    media_type: str = JPEG
    quality: int = 90
    window: Window | None = None
    viewport: Viewport | None = None
    #: Only shrink to the viewport, never enlarge (thumbnails of small images).
    shrink_only: bool = False


class CannotRender(Exception):
    """The frame cannot be drawn here: no decoder for its transfer syntax, the decoders
    refuse the data, or its pixel attributes make no sense. ``str()`` says why."""


class RegionOutside(ValueError):
    """The viewport's source region does not overlap the image."""


Pixels = npt.NDArray[np.uint8]


def render_frame(source: str | IO[bytes], frame: int, options: RenderOptions) -> bytes:
    """Decode frame ``frame`` (0-based) of a Part 10 file and encode it as asked."""
    ds = Dataset()
    try:
        arr = pixel_array(source, ds_out=ds, index=frame)  # type: ignore[arg-type]
    except (NotImplementedError, RuntimeError, ValueError, AttributeError) as exc:
        raise CannotRender(f"the pixel data cannot be decoded: {_short(exc)}") from exc
    try:
        pixels = display_pixels(arr, ds, options.window)
    except (ValueError, AttributeError, KeyError, IndexError, TypeError) as exc:
        # e.g. PALETTE COLOR without its tables, a malformed LUT descriptor
        raise CannotRender(f"the pixel attributes cannot be applied: {_short(exc)}") from exc
    pixels = fit(pixels, options.viewport, shrink_only=options.shrink_only)
    return encode(pixels, options.media_type, options.quality)


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:400] or type(exc).__name__


def display_pixels(
    arr: npt.NDArray[np.generic], ds: Dataset, window: Window | None = None
) -> Pixels:
    """8-bit display values of one decoded frame: ``(rows, cols)`` grayscale or
    ``(rows, cols, 3)`` RGB. ``ds`` holds the Image Pixel, Modality LUT and VOI LUT
    attributes (group 0028)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:
        return _color_to_8bit(arr, int(ds.get("BitsStored", 8)))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _color_to_8bit(rgb, 16 if depth > 8 else 8)
    values = apply_modality_lut(_masked(arr, ds), ds).astype(np.float64)
    out = _voi(values, ds, window)
    if photometric == "MONOCHROME1":
        out = 255.0 - out
    return _to_uint8(out)


def _masked(arr: npt.NDArray[np.generic], ds: Dataset) -> npt.NDArray[np.generic]:
    """Drop bits above Bits Stored of unsigned data (overlay bits, garbage); pydicom
    already sign-extends signed data to Bits Stored."""
    stored = int(ds.get("BitsStored", 0))
    if arr.dtype.kind == "u" and 0 < stored < arr.dtype.itemsize * 8:
        masked: npt.NDArray[np.generic] = np.bitwise_and(arr, (1 << stored) - 1, dtype=arr.dtype)
        return masked
    return arr


def _first(value: object) -> float:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def _instance_window(ds: Dataset) -> Window | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR")).upper().replace("_", "-").lower()
    if function not in ("linear", "linear-exact", "sigmoid"):
        function = "linear"
    minimum = 1.0 if function == "linear" else 0.0
    if width <= minimum:
        return None
    return Window(center, width, function)  # type: ignore[arg-type]


def _voi(
    values: npt.NDArray[np.float64], ds: Dataset, window: Window | None
) -> npt.NDArray[np.float64]:
    window = window or _instance_window(ds)
    if window is not None:
        return apply_window(values, window)
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        out = apply_voi(np.rint(values).astype(np.int64), ds).astype(np.float64)
        return out * (255.0 / float((1 << bits) - 1))
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return apply_window(values, Window((low + high) / 2, high - low, "linear-exact"))


def apply_window(values: npt.NDArray[np.float64], window: Window) -> npt.NDArray[np.float64]:
    """PS3.3 C.11.2.1.2 (linear), C.11.2.1.3.2 (linear exact) and C.11.2.1.3.1
    (sigmoid), with an output range of 0..255."""
    center, width, function = window
    if function == "sigmoid":
        # exp overflows to inf past ~709, which is the right limit (0) but warns.
        exponent = np.clip(-4.0 * (values - center) / width, -700.0, 700.0)
        out: npt.NDArray[np.float64] = 255.0 / (1.0 + np.exp(exponent))
        return out
    if function == "linear":
        center -= 0.5
        width -= 1.0
    below = values <= center - width / 2
    above = values > center + width / 2
    out = np.empty_like(values)
    out[below] = 0.0
    out[above] = 255.0
    between = ~(below | above)
    if width > 0 and between.any():
        out[between] = ((values[between] - center) / width + 0.5) * 255.0
    return out


def _to_uint8(values: npt.NDArray[np.float64]) -> Pixels:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _color_to_8bit(arr: npt.NDArray[np.generic], bits: int) -> Pixels:
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    scale = 255.0 / float((1 << min(max(bits, 1), 32)) - 1)
    return _to_uint8(arr.astype(np.float64) * scale)


def _source_box(viewport: Viewport, rows: int, cols: int) -> tuple[int, int, int, int, bool, bool]:
    """(left, top, right, bottom, flip_x, flip_y) of the viewport's source region,
    clipped to the image."""
    sx = viewport.sx or 0
    sy = viewport.sy or 0
    sw = viewport.sw if viewport.sw is not None else cols - sx
    sh = viewport.sh if viewport.sh is not None else rows - sy
    left, right = sorted((sx, sx + sw))
    top, bottom = sorted((sy, sy + sh))
    left, right = max(left, 0), min(right, cols)
    top, bottom = max(top, 0), min(bottom, rows)
    if right <= left or bottom <= top:
        raise RegionOutside(
            f"the viewport's source region ({sx},{sy},{sw},{sh}) lies outside the "
            f"{cols}x{rows} image"
        )
    return left, top, right, bottom, sw < 0, sh < 0


def fit(pixels: Pixels, viewport: Viewport | None, *, shrink_only: bool = False) -> Pixels:
    """Cut the viewport's source region and scale it to fit ``vw`` x ``vh``, keeping the
    aspect ratio (the result touches the viewport on at least one side)."""
    if viewport is None:
        return pixels
    rows, cols = pixels.shape[:2]
    left, top, right, bottom, flip_x, flip_y = _source_box(viewport, rows, cols)
    region = pixels[top:bottom, left:right]
    if flip_x:
        region = region[:, ::-1]
    if flip_y:
        region = region[::-1]
    height, width = region.shape[:2]
    scale = min(viewport.width / width, viewport.height / height)
    if shrink_only:
        scale = min(scale, 1.0)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(np.ascontiguousarray(region))
    if size != (width, height):
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(image)


def encode(pixels: Pixels, media_type: str, quality: int = 90) -> bytes:
    """JPEG or PNG bytes of 8-bit grayscale or RGB pixels."""
    image = Image.fromarray(pixels)
    out = io.BytesIO()
    if media_type == PNG:
        image.save(out, format="PNG", compress_level=3)
    else:
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
