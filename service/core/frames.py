"""WADO-RS frame retrieval (PS3.18 §10.4.1.1.4): parse a frame list, find the frames.

The hot path is one index lookup (the instance's layout) and one ranged read per
request: native little endian frames by offset, encapsulated frames by their
fragments, without pydicom. Only what cannot be served that way (frames decoded to
native bytes, big endian, deflated or bit-packed data) loads the whole instance, one
at a time per worker, in a thread.
"""

from __future__ import annotations

import re
from typing import Final

import anyio
import anyio.to_thread
import msgspec
from pydicom.encaps import generate_frames

from service.dicom.frames import NATIVE_LITTLE_ENDIAN, Layout, read_layout
from service.dicom.part10 import DEFLATED_TRANSFER_SYNTAXES
from service.errors import MalformedRequest, NotAcceptable, NotFound
from service.imaging.transcode import decodable, decode_frames
from service.index.base import Index, InstanceRef
from service.storage.base import BlobStore

__all__ = ["FrameService", "FrameSource", "parse_frame_list"]

_NUMBER: Final = re.compile(r"[0-9]{1,9}")
MAX_FRAMES_PER_REQUEST: Final = 10_000
#: Frames served as stored are read this many bytes at a time, so a long frame list
#: streams instead of being held whole.
READ_BATCH_BYTES: Final = 16 * 1024 * 1024


def parse_frame_list(text: str) -> list[int]:
    """``"3,1,2"`` -> ``[3, 1, 2]``: 1-based, order kept; anything else is a 400."""
    numbers: list[int] = []
    seen: set[int] = set()
    items = text.split(",")
    if len(items) > MAX_FRAMES_PER_REQUEST:
        raise MalformedRequest(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    for item in items:
        item = item.strip()
        if not _NUMBER.fullmatch(item):
            raise MalformedRequest(
                f"frame list {text!r}: {item!r} is not a frame number "
                "(frame numbers are positive integers separated by commas, e.g. 1,2,3)"
            )
        number = int(item)
        if number == 0:
            raise MalformedRequest(f"frame list {text!r}: frame numbers start at 1")
        if number in seen:
            raise MalformedRequest(f"frame list {text!r}: frame {number} is listed twice")
        seen.add(number)
        numbers.append(number)
    return numbers


class FrameSource(msgspec.Struct, frozen=True, kw_only=True):
    """One instance's frames and the ways they can be served."""

    ref: InstanceRef
    layout: Layout | None
    #: Frames can be served as stored, by offset or from their fragments.
    servable: bool
    #: Frames can be decoded to native little endian bytes here.
    decodable: bool


class FrameService:
    def __init__(
        self,
        storage: BlobStore,
        index: Index,
        *,
        store: str,
        max_bytes: int,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        self.storage = storage
        self.index = index
        self.store = store
        self.max_bytes = max_bytes
        self.limiter = limiter

    async def source(self, study: str, series: str, sop: str, numbers: list[int]) -> FrameSource:
        """The instance's frame source; 404 when it is not stored, has no pixel data
        or lacks one of ``numbers``."""
        found = await self.index.layouts(self.store, study, series, sop)
        if not found:
            raise NotFound.unstored(study, series, sop)
        ref, document = found[0]
        layout = read_layout(document)
        deflated = ref.transfer_syntax in DEFLATED_TRANSFER_SYNTAXES
        if layout is None and not deflated:
            raise NotFound(f"instance {sop} has no pixel data, so it has no frames")
        table = layout.frames if layout is not None else None
        if table is not None:
            missing = [n for n in numbers if n > table.count]
            if missing:
                plural = "s" if table.count != 1 else ""
                raise NotFound(
                    f"frame {missing[0]} does not exist: instance {sop} has "
                    f"{table.count} frame{plural}"
                )
        return FrameSource(
            ref=ref,
            layout=layout,
            servable=table is not None and not table.decode,
            decodable=decodable(ref.transfer_syntax),
        )

    def batches(self, source: FrameSource, numbers: list[int]) -> list[list[int]]:
        """``numbers`` cut into runs of at most :data:`READ_BATCH_BYTES` stored bytes
        (one run at least one frame), for :meth:`stored`."""
        layout = source.layout
        table = layout.frames if layout is not None else None
        if layout is None or table is None or (layout.length is None and not table.starts):
            return [numbers]
        if layout.length is not None:
            sizes = {n: table.native_length for n in numbers}
        else:
            bounds = [*table.starts, len(layout.fragments)]
            sizes = {
                n: sum(length for _, length in layout.fragments[bounds[n - 1] : bounds[n]])
                for n in numbers
            }
        runs: list[list[int]] = [[]]
        total = 0
        for number in numbers:
            if runs[-1] and total + sizes[number] > READ_BATCH_BYTES:
                runs.append([])
                total = 0
            runs[-1].append(number)
            total += sizes[number]
        return runs

    async def stored(self, source: FrameSource, numbers: list[int]) -> list[bytes]:
        """Frames as stored: native by offset, encapsulated as their fragments joined."""
        layout = source.layout
        if layout is None or layout.frames is None or layout.frames.decode:
            raise RuntimeError("frames of this instance cannot be served as stored")
        table = layout.frames
        key = source.ref.blob_key
        if layout.length is not None:
            size = table.native_length
            ranges = [(layout.value_offset + (n - 1) * size, size) for n in numbers]
            return await self.storage.read_ranges(key, ranges)
        fragments = layout.fragments
        if not table.starts:
            return await self._split(source, numbers)
        bounds = [*table.starts, len(fragments)]
        spans = [fragments[bounds[n - 1] : bounds[n]] for n in numbers]
        flat = [f for span in spans for f in span]
        pieces = await self.storage.read_ranges(key, flat)
        out, i = [], 0
        for span in spans:
            out.append(b"".join(pieces[i : i + len(span)]))
            i += len(span)
        return out

    async def _split(self, source: FrameSource, numbers: list[int]) -> list[bytes]:
        """No offset table and more fragments than frames: read the whole encapsulated
        value and let pydicom find where frames start (JPEG/J2K markers)."""
        layout = source.layout
        assert layout is not None
        assert layout.frames is not None
        ref, count = source.ref, layout.frames.count
        offset, length = layout.fragments[-1]
        start = layout.value_offset
        if offset + length - start > self.max_bytes:
            raise NotAcceptable(
                f"instance {ref.sop_uid} has no offset table and its pixel data is over "
                f"{self.max_bytes // 2**20} MB (DICOMWEB_TRANSCODE_MAX_BYTES), too large to "
                "search for its frames; retrieve the whole instance instead"
            )
        [value] = await self.storage.read_ranges(ref.blob_key, [(start, offset + length - start)])

        def split() -> list[bytes]:
            try:
                frames = list(generate_frames(value, number_of_frames=count))
            except ValueError:  # fewer fragments than frames
                frames = []
            if len(frames) < max(numbers):
                raise NotAcceptable(
                    f"instance {ref.sop_uid} has no offset table and only {len(frames)} of "
                    f"its {count} frames can be told apart in its fragments; retrieve the "
                    "whole instance instead"
                )
            return [frames[n - 1] for n in numbers]

        return await anyio.to_thread.run_sync(split, limiter=self.limiter)

    async def decoded(self, source: FrameSource, numbers: list[int]) -> list[bytes]:
        """Frames as native little endian bytes (Explicit VR Little Endian)."""
        ref, layout = source.ref, source.layout
        table = layout.frames if layout is not None else None
        if ref.transfer_syntax in NATIVE_LITTLE_ENDIAN and table is not None and not table.decode:
            return await self.stored(source, numbers)
        if ref.size > self.max_bytes:
            raise NotAcceptable(
                f"instance {ref.sop_uid} is {ref.size // 2**20} MB, over the decoding limit "
                f"of {self.max_bytes // 2**20} MB (DICOMWEB_TRANSCODE_MAX_BYTES); ask with "
                "transfer-syntax=* to receive its frames as stored"
            )
        data = b"".join([c async for c in self.storage.read(ref.blob_key)])
        return await anyio.to_thread.run_sync(
            lambda: decode_frames(data, numbers, max_bytes=self.max_bytes), limiter=self.limiter
        )
