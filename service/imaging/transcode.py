"""Transcoding stored instances to a native little endian syntax, with pydicom's pixel
plugins (pylibjpeg, openjpeg, pyjpegls, pillow, RLE).

Promises:

* :func:`transcode` turns one Part 10 file in any syntax pydicom can decode here
  (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE, deflate, big
  endian, implicit VR) into Explicit VR Little Endian (or Implicit VR Little Endian):
  pixel data decoded (YCbCr from JPEG becomes RGB, ``PlanarConfiguration`` 0),
  ``LossyImageCompression`` "01" kept or set when the source syntax is lossy, and
  the File Meta Transfer Syntax UID set to what the bytes are.
* :func:`decode_frames` gives chosen frames as native little endian bytes (the
  ``application/octet-stream`` frame of Explicit VR Little Endian).
* Both refuse an instance larger than ``max_bytes`` (stored or decoded) with
  :class:`NotAcceptable` before decoding, so memory stays bounded: one instance at a
  time, fully in memory.

Everything here blocks: call it in a worker thread.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterable, Iterator
from typing import Final

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import iter_pixels, pack_bits
from pydicom.uid import UID

from service.dicom.frames import int_value
from service.errors import NotAcceptable, NotFound

__all__ = [
    "IMPLICIT_VR_LITTLE_ENDIAN",
    "TARGETS",
    "can_transcode",
    "decodable",
    "decode_frames",
    "transcode",
]

EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
#: The syntaxes we can produce.
TARGETS: Final = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN})
#: Source syntaxes that are always lossy: the decoded copy must say so (PS3.3 C.7.6.1.1.5).
_LOSSY: Final = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.203",
    }
)
_SWAP_WIDTH: Final = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
_MB: Final = 1024 * 1024


@functools.cache
def decodable(transfer_syntax: str) -> bool:
    """Whether pydicom can decode pixel data in this syntax with the installed plugins."""
    try:
        return bool(get_decoder(UID(transfer_syntax)).is_available)
    except (NotImplementedError, ValueError):
        return False


def can_transcode(source: str, target: str) -> bool:
    return target in TARGETS and (source == target or decodable(source))


def _check_size(ds: Dataset, stored: int, max_bytes: int) -> None:
    frames = max(1, int_value(ds, "NumberOfFrames", 1))
    bits = int_value(ds, "BitsAllocated", 8)
    pixels = (
        int_value(ds, "Rows", 0) * int_value(ds, "Columns", 0) * int_value(ds, "SamplesPerPixel", 1)
    )
    # Decoding works on arrays of at least a byte per sample, whatever BitsAllocated says.
    decoded = frames * pixels * max(1, (bits + 7) // 8)
    size = max(stored, decoded)
    if size > max_bytes:
        raise NotAcceptable(
            f"instance {ds.get('SOPInstanceUID', '?')} needs {size / _MB:.0f} MB to "
            f"transcode, over the limit of {max_bytes / _MB:.0f} MB "
            "(DICOMWEB_TRANSCODE_MAX_BYTES); ask with transfer-syntax=* to receive it as stored"
        )


def _read(data: bytes, max_bytes: int) -> Dataset:
    head = dcmread(io.BytesIO(data), stop_before_pixels=True)
    _check_size(head, len(data), max_bytes)
    return dcmread(io.BytesIO(data))


@contextlib.contextmanager
def _decoding(ds: Dataset) -> Iterator[None]:
    """Pixel data that the plugins cannot decode (corrupt, or a form they do not
    support) is the stored data's problem, not a fault of ours: say so, and how to get
    the instance anyway."""
    try:
        yield
    except Exception as exc:
        reason = " ".join(str(exc).split())
        raise NotAcceptable(
            f"the pixel data of instance {ds.get('SOPInstanceUID', '?')} cannot be decoded "
            f"here ({type(exc).__name__}: {reason}); ask with transfer-syntax=* to receive "
            "it as stored"
        ) from exc


def _native_bytes(ds: Dataset, frame: np.ndarray) -> bytes:
    if int_value(ds, "BitsAllocated", 8) == 1:
        return pack_bits(frame)
    return np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<")).tobytes()


def _swap_other_binary(ds: Dataset) -> None:
    """Big endian OW/OL/OF/OD/OV values other than the pixel data are raw bytes in
    pydicom: reverse each word so they are right once written little endian."""
    for element in ds.iterall():
        width = _SWAP_WIDTH.get(str(element.VR))
        if width and element.tag != 0x7FE00010 and isinstance(element.value, bytes):
            usable = len(element.value) - len(element.value) % width
            words = np.frombuffer(element.value[:usable], dtype=f">u{width}")
            element.value = words.astype(f"<u{width}").tobytes() + element.value[usable:]


def _decode_native_big_endian(ds: Dataset) -> None:
    frames = list(iter_pixels(ds, raw=True))
    ds.PixelData = b"".join(_native_bytes(ds, f) for f in frames)
    ds["PixelData"].VR = "OB" if int_value(ds, "BitsAllocated", 8) <= 8 else "OW"
    if int_value(ds, "SamplesPerPixel", 1) > 1:
        ds.PlanarConfiguration = 0  # pydicom's arrays are colour-by-pixel
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        ds.PhotometricInterpretation = "YBR_FULL"  # the array is no longer subsampled


def transcode(data: bytes, target: str, *, max_bytes: int) -> bytes:
    """``data`` (a Part 10 file) re-encoded in ``target``; see the module docstring."""
    if target not in TARGETS:
        raise NotAcceptable(f"transcoding to {target} is not offered")
    ds = _read(data, max_bytes)
    source = str(ds.file_meta.TransferSyntaxUID)
    big_endian = source == "1.2.840.10008.1.2.2"
    if "PixelData" in ds:
        with _decoding(ds):
            if UID(source).is_compressed:
                ds.decompress(generate_instance_uid=False)
                if source in _LOSSY:
                    ds.LossyImageCompression = "01"
            elif big_endian:
                _decode_native_big_endian(ds)
    if big_endian:
        _swap_other_binary(ds)
    ds.file_meta.TransferSyntaxUID = UID(target)
    out = io.BytesIO()
    dcmwrite(
        out,
        ds,
        enforce_file_format=True,
        implicit_vr=target == IMPLICIT_VR_LITTLE_ENDIAN,
        little_endian=True,
    )
    return out.getvalue()


def decode_frames(data: bytes, numbers: Iterable[int], *, max_bytes: int) -> list[bytes]:
    """Frames ``numbers`` (1-based, in the order given) of ``data`` as native little
    endian bytes. Raises :class:`NotFound` naming a frame number the instance lacks."""
    ds = _read(data, max_bytes)
    if "PixelData" not in ds:
        raise NotFound(f"instance {ds.get('SOPInstanceUID', '?')} has no pixel data")
    count = max(1, int_value(ds, "NumberOfFrames", 1))
    wanted = list(numbers)
    missing = [n for n in wanted if n > count]
    if missing:
        raise NotFound(
            f"frame {missing[0]} does not exist: the instance has {count} frame"
            + ("s" if count != 1 else "")
        )
    source = str(ds.file_meta.TransferSyntaxUID)
    if source not in ("1.2.840.10008.1.2", EXPLICIT_VR_LITTLE_ENDIAN) and not decodable(source):
        raise NotAcceptable(f"pixel data in {source} cannot be decoded here")
    with _decoding(ds):
        arrays = iter_pixels(ds, indices=[n - 1 for n in wanted])
        return [_native_bytes(ds, a) for a in arrays]
