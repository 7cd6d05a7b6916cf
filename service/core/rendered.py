"""Rendered and thumbnail resources (PS3.18 §8.3.5, §9.5): which frames to draw, and
drawing them.

What is an image, and how many frames it has, comes from the metadata stored at ingest,
so a request for a non-image or a missing frame is answered without reading a file. An
instance's file is read from storage into memory when it is small and into a temporary
file otherwise; pydicom then decodes only the frame asked for. Decoding and encoding run
in a worker thread.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any, NamedTuple

import anyio.to_thread
import msgspec

from service.core.search import Level, Query
from service.core.wado import WadoService
from service.errors import MalformedRequest, NotAcceptable, NotFound
from service.imaging.render import (
    PIPELINE_VERSION,
    CannotRender,
    RegionOutside,
    RenderOptions,
    render_frame,
)
from service.index.base import InstanceRef

__all__ = ["MAX_RENDER_PIXELS", "Frame", "RenderedService"]

#: Largest frame (Rows x Columns) drawn; decoding and windowing hold several copies of it.
MAX_RENDER_PIXELS = 50_000_000


class Frame(NamedTuple):
    """One frame of one stored image; ``number`` is 1-based as in PS3.18 frame lists."""

    ref: InstanceRef
    number: int
    #: Rows x Columns, to refuse pictures too large to draw before reading anything.
    area: int = 0


class _Element(msgspec.Struct):
    Value: list[Any] = []


class _ImageFacts(msgspec.Struct):
    """The few attributes of an instance's DICOM JSON that say whether it is an image."""

    frames: _Element | None = msgspec.field(default=None, name="00280008")
    rows: _Element | None = msgspec.field(default=None, name="00280010")
    columns: _Element | None = msgspec.field(default=None, name="00280011")
    pixel_data: dict[str, Any] | None = msgspec.field(default=None, name="7FE00010")
    float_pixel_data: dict[str, Any] | None = msgspec.field(default=None, name="7FE00008")
    double_pixel_data: dict[str, Any] | None = msgspec.field(default=None, name="7FE00009")


_facts = msgspec.json.Decoder(_ImageFacts)


def _number(element: _Element | None, default: int) -> int:
    try:
        return int(element.Value[0]) if element is not None and element.Value else default
    except (TypeError, ValueError):
        return default


class _Image(NamedTuple):
    ref: InstanceRef
    frames: int
    area: int


def _image(ref: InstanceRef, doc: bytes) -> _Image | None:
    """The instance as an image, None when it has no pixel data."""
    facts = _facts.decode(doc)
    if not (facts.pixel_data or facts.float_pixel_data or facts.double_pixel_data):
        return None
    area = _number(facts.rows, 0) * _number(facts.columns, 0)
    return _Image(ref, max(_number(facts.frames, 1), 1), area)


def _describe(ref: InstanceRef) -> str:
    return f"instance {ref.sop_uid} of series {ref.series_uid} in study {ref.study_uid}"


def _no_image(study: str, series: str | None, sop: str | None, ref: InstanceRef) -> str:
    if sop is not None:
        what = f"{_describe(ref)} has no pixel data"
    elif series is not None:
        what = f"series {series} in study {study} holds no image"
    else:
        what = f"study {study} holds no image"
    return what + ": only images have rendered representations"


class RenderedService:
    def __init__(self, wado: WadoService, *, memory_bytes: int, thumbnail_size: int) -> None:
        self.wado = wado
        self.memory_bytes = memory_bytes
        self.thumbnail_size = thumbnail_size

    async def _images(self, study: str, series: str | None, sop: str | None) -> list[_Image]:
        """Every image of a study, series or instance, in the index's order; 404 when
        none is stored, or none of those stored is an image."""
        found = await self.wado.metadata(study, series, sop)
        images = [image for ref, doc in found if (image := _image(ref, doc)) is not None]
        if not images:
            raise NotFound(_no_image(study, series, sop, found[0][0]))
        return images

    async def frames(
        self,
        study: str,
        series: str | None = None,
        sop: str | None = None,
        numbers: list[int] | None = None,
    ) -> list[Frame]:
        """What a rendered resource shows: the listed frames of an instance, else the
        first frame of each image (a multi-frame instance is shown by its first frame)."""
        images = await self._images(study, series, sop)
        if numbers is None:
            return [Frame(image.ref, 1, image.area) for image in images]
        ref, count, area = images[0]
        for number in numbers:
            if number > count:
                raise NotFound(
                    f"frame {number} does not exist: {_describe(ref)} has {count} "
                    f"frame{'s' if count != 1 else ''}"
                )
        return [Frame(ref, number, area) for number in numbers]

    async def representative(
        self,
        study: str,
        series: str | None = None,
        sop: str | None = None,
        numbers: list[int] | None = None,
    ) -> Frame:
        """The frame a thumbnail shows: the first listed frame; an instance's first frame;
        the middle image (by Instance Number) of a series; of a study, that of its first
        series (by Series Number) that holds an image."""
        if sop is not None or series is not None:
            if numbers is not None:
                return (await self.frames(study, series, sop, numbers))[0]
            images = await self._images(study, series, sop)
            middle = images[(len(images) - 1) // 2]
            return Frame(middle.ref, 1, middle.area)
        page = await self.wado.index.search(
            self.wado.store, Query(level=Level.SERIES, study_uid=study, limit=10_000)
        )
        if not page.hits:
            raise NotFound.unstored(study)
        for hit in page.hits:
            if hit.series_uid is None:
                continue
            try:
                return await self.representative(study, hit.series_uid)
            except NotFound:
                continue
        raise NotFound(f"study {study} holds no image: only images have rendered representations")

    @staticmethod
    def etag(frame: Frame, options: RenderOptions) -> str:
        """A strong entity tag of the picture ``render`` would return: it changes when
        the stored instance (its SHA-256), the frame, the options or the pipeline do."""
        key = msgspec.json.encode(
            [PIPELINE_VERSION, frame.ref.sop_uid, frame.ref.sha256, frame.number, options]
        )
        return '"' + hashlib.sha256(key).hexdigest()[:32] + '"'

    async def render(self, frame: Frame, options: RenderOptions) -> bytes:
        """The frame as JPEG or PNG bytes."""
        if frame.area > MAX_RENDER_PIXELS:
            raise NotAcceptable(
                f"{_describe(frame.ref)} has {frame.area} pixels per frame, more than the "
                f"{MAX_RENDER_PIXELS} rendered here; retrieve its frames instead"
            )
        source = await self._open(frame.ref)
        try:
            return await anyio.to_thread.run_sync(_render, source, frame, options)
        finally:
            await anyio.to_thread.run_sync(source.close)

    async def _open(self, ref: InstanceRef) -> IO[bytes]:
        chunks: AsyncIterator[bytes] = self.wado.content(ref)
        if ref.size <= self.memory_bytes:
            return io.BytesIO(b"".join([chunk async for chunk in chunks]))
        spool: IO[bytes] = await anyio.to_thread.run_sync(tempfile.TemporaryFile)
        try:
            async for chunk in chunks:
                await anyio.to_thread.run_sync(spool.write, chunk)
        except BaseException:
            await anyio.to_thread.run_sync(spool.close)
            raise
        return spool


def _render(source: IO[bytes], frame: Frame, options: RenderOptions) -> bytes:
    source.seek(0)
    try:
        return render_frame(source, frame.number - 1, options)
    except RegionOutside as exc:
        raise MalformedRequest(f"viewport: {exc}") from exc
    except CannotRender as exc:
        raise NotAcceptable(
            f"frame {frame.number} of {_describe(frame.ref)} (transfer syntax "
            f"{frame.ref.transfer_syntax}) cannot be rendered here, {exc}; retrieve the "
            "instance as stored instead"
        ) from exc
