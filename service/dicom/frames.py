"""Where each frame of an instance's pixel data sits in its stored file (PS3.5 §8, §A.4).

:func:`frame_table` is computed once at ingest from the parsed header and the
scanner's :class:`PixelDataLocation`, and stored with it as the instance's
:class:`Layout`, so that serving a frame is one index lookup and one ranged read:

* Native pixel data: every frame has the same length, so the table holds only that
  length (frame *k* starts at ``value_offset + k * native_length``).
* Encapsulated pixel data: the index of each frame's first fragment (frame *k* is the
  fragments ``starts[k]:starts[k + 1]``), taken from the Extended Offset Table
  (7FE0,0001) when present, else the Basic Offset Table, else one fragment per frame
  when the counts agree, else every fragment for a single frame. Otherwise
  ``starts`` stays empty and the frames are found when asked for, from the fragments'
  bytes (pydicom's ``generate_frames``).
* ``decode``: the stored bytes cannot be served as frames by offset at all (big
  endian, a deflated data set, single-bit frames that do not end on a byte boundary,
  pixel data shorter than its frames); such frames are decoded from the whole file.

:data:`FRAME_MEDIA_TYPES` maps transfer syntaxes to the media types PS3.18 Table
8.7.3-5 gives their frames, and :data:`DEFAULT_SYNTAX` the syntax each media type
means when a request names none.
"""

from __future__ import annotations

import itertools
import struct
from typing import Final

import msgspec
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from service.dicom.dicomjson import element_text
from service.dicom.part10 import PixelDataLocation

__all__ = [
    "DEFAULT_SYNTAX",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "FRAME_MEDIA_TYPES",
    "NATIVE_LITTLE_ENDIAN",
    "OCTET_STREAM",
    "FrameTable",
    "Layout",
    "frame_media_type",
    "frame_table",
    "int_value",
    "read_layout",
]

EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
#: Syntaxes whose native pixel bytes are little endian as stored: frames are served by
#: offset and are the same bytes Explicit VR Little Endian would carry.
NATIVE_LITTLE_ENDIAN: Final = frozenset({"1.2.840.10008.1.2", EXPLICIT_VR_LITTLE_ENDIAN})
OCTET_STREAM: Final = "application/octet-stream"

#: PS3.18 Table 8.7.3-5: the media type of a frame in each encapsulated syntax.
FRAME_MEDIA_TYPES: Final = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}

#: PS3.18 Table 8.7.3-5: the syntax a media type means without a transfer-syntax.
DEFAULT_SYNTAX: Final = {
    OCTET_STREAM: EXPLICIT_VR_LITTLE_ENDIAN,
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/x-jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
}


def frame_media_type(transfer_syntax: str) -> str:
    """The media type of a frame stored in ``transfer_syntax`` (native: octet-stream)."""
    return FRAME_MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)


class FrameTable(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The frames of one instance; see the module docstring."""

    #: Number of Frames (1 when the attribute is absent).
    count: int
    #: Bytes of one decoded frame in Explicit VR Little Endian (for size limits).
    frame_bytes: int
    #: Native only: stored bytes per frame (0 when frames cannot be read by offset).
    native_length: int = 0
    #: Encapsulated only: index of each frame's first fragment; empty when unknown.
    starts: tuple[int, ...] = ()
    #: Frames can only be had by decoding the whole file.
    decode: bool = False


class Layout(PixelDataLocation, frozen=True, kw_only=True):
    """The stored layout document: the pixel data location plus its frame table."""

    frames: FrameTable | None = None


def read_layout(document: bytes) -> Layout | None:
    """Decode a stored layout document (empty: the instance has no pixel data)."""
    return msgspec.json.decode(document, type=Layout) if document else None


def int_value(ds: Dataset, keyword: str, default: int) -> int:
    """An integer attribute, or ``default`` when absent, empty or not one number."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"unknown keyword {keyword}")
    try:
        text = element_text(ds, int(tag))
        return int(text) if text else default
    except (TypeError, ValueError, struct.error):
        return default


def _starts(ds: Dataset, location: PixelDataLocation, count: int) -> tuple[int, ...]:
    fragments = location.fragments
    if not fragments:
        return ()
    # Offset tables count from the first fragment's item tag, 8 bytes before its value.
    first = fragments[0][0] - 8
    index_of = {offset - 8 - first: i for i, (offset, _) in enumerate(fragments)}
    offsets: tuple[int, ...] = ()
    try:
        extended = ds.get("ExtendedOffsetTable")
    except Exception:  # a deferred value that cannot be read: not needed
        extended = None
    if isinstance(extended, bytes) and len(extended) == 8 * count:
        offsets = struct.unpack(f"<{count}Q", extended)
    elif len(location.basic_offset_table) == count:
        offsets = location.basic_offset_table
    if offsets:
        found = [index_of.get(offset) for offset in offsets]
        if found[0] == 0 and all(
            b is not None and a is not None and a < b for a, b in itertools.pairwise(found)
        ):
            return tuple(i for i in found if i is not None)
    if len(fragments) == count:
        return tuple(range(count))
    if count == 1:
        return (0,)
    return ()


def frame_table(ds: Dataset, location: PixelDataLocation, transfer_syntax: str) -> FrameTable:
    """The frame table of an instance whose pixel data is at ``location``."""
    count = max(1, int_value(ds, "NumberOfFrames", 1))
    rows, columns = int_value(ds, "Rows", 0), int_value(ds, "Columns", 0)
    samples, bits = int_value(ds, "SamplesPerPixel", 1), int_value(ds, "BitsAllocated", 8)
    pixels = rows * columns * samples
    frame_bits = pixels * bits
    frame_bytes = (frame_bits + 7) // 8
    if location.length is None:  # encapsulated
        return FrameTable(count=count, frame_bytes=frame_bytes, starts=_starts(ds, location, count))
    aligned = frame_bits % 8 == 0 and frame_bytes > 0
    fits = location.length >= count * frame_bytes
    if transfer_syntax in NATIVE_LITTLE_ENDIAN and aligned and fits:
        return FrameTable(count=count, frame_bytes=frame_bytes, native_length=frame_bytes)
    return FrameTable(count=count, frame_bytes=frame_bytes, decode=True)
