"""Real compressed instances from pydicom's test data, re-encapsulated to exercise every
way frames can sit in fragments (several fragments per frame, Basic or Extended Offset
Table or none). The compressed frame bytes stay pydicom's own."""

from __future__ import annotations

import io
from typing import Literal

import pydicom
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.uid import generate_uid

from tests.helpers import pydicom_file

Table = Literal["basic", "extended", "none"]


def reference_frames(data: bytes) -> list[bytes]:
    """The frames of an encapsulated Part 10 file, as pydicom extracts them."""
    ds = pydicom.dcmread(io.BytesIO(data))
    count = int(ds.get("NumberOfFrames", 1) or 1)
    return [f for f in generate_frames(ds.PixelData, number_of_frames=count)]


def refragmented(name: str, *, pieces: int, table: Table, frames: int | None = None) -> bytes:
    """``name`` with each frame split in ``pieces`` fragments and the given offset table,
    as a new instance (fresh UIDs); ``frames`` keeps only the first so many frames."""
    data = pydicom_file(name)
    originals = reference_frames(data)[:frames]
    ds = pydicom.dcmread(io.BytesIO(data))
    if table == "extended":
        pixel, offsets, lengths = encapsulate_extended(originals)
        ds.ExtendedOffsetTable = offsets
        ds.ExtendedOffsetTableLengths = lengths
        if pieces > 1:
            raise ValueError("pydicom's extended encapsulation keeps one fragment per frame")
    else:
        pixel = encapsulate(originals, fragments_per_frame=pieces, has_bot=table == "basic")
    ds.PixelData = pixel
    ds["PixelData"].is_undefined_length = True
    if len(originals) > 1 or "NumberOfFrames" in ds:
        ds.NumberOfFrames = len(originals)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def renamed(name: str) -> bytes:
    """A bundled file as a new instance (fresh UIDs), bytes otherwise as pydicom writes
    them in the file's own transfer syntax."""
    ds = pydicom.dcmread(io.BytesIO(pydicom_file(name)))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
