"""WADO-RS bulk data (PS3.18 §10.4.1.1.5): the values behind the BulkDataURIs of our
metadata, as ``multipart/related; type="application/octet-stream"`` (the default) or a
single ``application/octet-stream`` body, which honours a ``Range`` request."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.params import FromPath
from litestar.response import Response, Stream

from service.core.bulkdata import BulkValue, locate, parse_path, stream
from service.dicomweb.common import services, uids
from service.dicomweb.frames import frames_response
from service.dicomweb.media import MULTIPART_RELATED, parse_accept
from service.dicomweb.multipart import closing_delimiter, make_boundary, part_header
from service.dicomweb.responses import problems
from service.errors import NotAcceptable, RangeNotSatisfiable

__all__ = ["bulkdata"]

OCTET_STREAM = "application/octet-stream"
PIXEL_DATA = 0x7FE00010


def _multipart_wanted(accept: str | None) -> bool:
    """True for multipart/related, False for a single part; 406 for anything else."""
    for media in parse_accept(accept):
        if media.type == "*/*" or (
            media.matches(MULTIPART_RELATED)
            and media.params.get("type", OCTET_STREAM).lower() in (OCTET_STREAM, "*/*")
        ):
            return True
        if media.matches(OCTET_STREAM):
            return False
    raise NotAcceptable(
        f'bulk data is offered as multipart/related; type="{OCTET_STREAM}" or as '
        f"{OCTET_STREAM} (Accept was {accept!r})"
    )


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range of a ``Range: bytes=...`` header as [start, end), or None to send
    everything (no header, several ranges, or another unit: RFC 9110 lets us ignore
    those). An unsatisfiable range is a 416."""
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[6:]
    if "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    try:
        if not dash:
            raise ValueError
        if first == "":
            start, end = max(0, size - int(last)), size
        else:
            start = int(first)
            end = min(size, int(last) + 1) if last else size
    except ValueError:
        return None  # a malformed Range header is ignored (RFC 9110 §14.2)
    if start >= size or start >= end:
        raise RangeNotSatisfiable(
            f"range {spec!r} lies outside the value's {size} bytes",
            {"Content-Range": f"bytes */{size}"},
        )
    return start, end


@get(
    "/studies/{study:str}/series/{series:str}/instances/{instance:str}/bulkdata/{path:path}",
    summary="Bulk data of an instance",
    description=(
        "The value a BulkDataURI of the metadata names, in little endian byte order. "
        'Accept: multipart/related; type="application/octet-stream" (default) or '
        "application/octet-stream, which honours a single Range."
    ),
    tags=["WADO-RS"],
    responses=problems(400, 404, 406, 416, 503),
)
async def bulkdata(
    request: Request[Any, Any, Any],
    study: FromPath[str],
    series: FromPath[str],
    instance: FromPath[str],
    path: FromPath[str],
) -> Response[bytes] | Stream:
    uids(study, series, instance)
    tag_path = parse_path(path)
    svc = services(request)
    if tag_path == [PIXEL_DATA]:
        source = await svc.frames.source(study, series, instance, [])
        layout, ref = source.layout, source.ref
        if layout is not None and layout.length is None:
            # Encapsulated (undefined length, as stored) pixel data is a sequence of
            # fragments, not one value: its bulk data is its frames, negotiated as the
            # frame resource negotiates them.
            count = layout.frames.count if layout.frames is not None else 1
            return await frames_response(request, source, list(range(1, count + 1)))
    else:
        ref = (await svc.wado.instances(study, series, instance))[0]
    multipart = _multipart_wanted(request.headers.get("accept"))
    value: BulkValue = await locate(svc.storage, ref, tag_path)
    if multipart:
        boundary = make_boundary()

        async def body() -> Any:
            yield part_header(boundary, OCTET_STREAM)
            async for chunk in stream(svc.storage, ref, value, 0, value.length):
                yield chunk
            yield closing_delimiter(boundary)

        return Stream(
            body(), media_type=f'multipart/related; type="{OCTET_STREAM}"; boundary={boundary}'
        )
    wanted = _byte_range(request.headers.get("range"), value.length)
    headers = {"Accept-Ranges": "bytes"}
    if wanted is None:
        start, end, status = 0, value.length, 200
    else:
        (start, end), status = wanted, 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{value.length}"
    headers["Content-Length"] = str(end - start)
    return Stream(
        stream(svc.storage, ref, value, start, end),
        media_type=OCTET_STREAM,
        status_code=status,
        headers=headers,
    )
