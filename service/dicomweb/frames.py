"""WADO-RS frames (PS3.18 §10.4.1.1.4): ``.../instances/{i}/frames/{list}``.

One part per requested frame, in the requested order, each with its media type and
``transfer-syntax``; a single-part body when one frame is asked for with a bare
media type. Negotiation rules: :mod:`service.dicomweb.frame_media`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, get
from litestar.params import FromPath
from litestar.response import Response, Stream

from service.core.frames import FrameSource, parse_frame_list
from service.dicomweb.common import services, uids
from service.dicomweb.frame_media import choose_frame_media
from service.dicomweb.multipart import closing_delimiter, make_boundary, part_header
from service.dicomweb.responses import problems

__all__ = ["frames_response", "retrieve_frames"]

_DOC = (
    "Frames as stored or decoded. Accept: multipart/related; "
    'type="application/octet-stream" (default; Explicit VR Little Endian, decoded when '
    "stored compressed), or type=image/jpeg, image/jls, image/jp2, image/jpx, "
    "image/dicom-rle with the stored transfer-syntax, or any type with "
    "transfer-syntax=* for frames as stored; a bare media type for a single frame. "
    "Frame list: 1-based numbers separated by commas, no duplicates."
)


@get(
    "/studies/{study:str}/series/{series:str}/instances/{instance:str}/frames/{frames:str}",
    summary="Retrieve frames of an instance",
    description=_DOC,
    response_description="One part per frame, in the order asked (or one frame as a single part)",
    tags=["WADO-RS"],
    responses=problems(400, 404, 406, 503),
)
async def retrieve_frames(
    request: Request[Any, Any, Any],
    study: FromPath[str],
    series: FromPath[str],
    instance: FromPath[str],
    frames: FromPath[str],
) -> Response[bytes] | Stream:
    uids(study, series, instance)
    numbers = parse_frame_list(frames)
    source = await services(request).frames.source(study, series, instance, numbers)
    return await frames_response(request, source, numbers)


async def frames_response(
    request: Request[Any, Any, Any], source: FrameSource, numbers: list[int]
) -> Response[bytes] | Stream:
    """Frames ``numbers`` of ``source`` as the request's Accept asks."""
    service = services(request).frames
    choice = choose_frame_media(
        request.headers.get("accept"),
        stored_syntax=source.ref.transfer_syntax,
        servable=source.servable,
        decodable=source.decodable,
        frame_count=len(numbers),
    )
    content_type = f"{choice.media_type}; transfer-syntax={choice.transfer_syntax}"
    # Decoded frames come from one decode of the whole instance (bounded by
    # DICOMWEB_TRANSCODE_MAX_BYTES); stored ones are read in batches as they are sent.
    batches = [numbers] if choice.decode else service.batches(source, numbers)
    read = service.decoded if choice.decode else service.stored
    first = await read(source, batches[0])  # errors still become a status, not a cut
    if not choice.multipart:
        return Response(first[0], media_type=content_type)
    boundary = make_boundary()

    async def body() -> AsyncIterator[bytes]:
        payloads, sent = first, 0
        for index in range(len(batches)):
            if index:
                payloads = await read(source, batches[index])
            for payload in payloads:
                yield (b"\r\n" if sent else b"") + part_header(boundary, content_type)
                yield payload
                sent += 1
        yield closing_delimiter(boundary)

    return Stream(
        body(),
        media_type=f'multipart/related; type="{choice.media_type}"; boundary={boundary}',
    )
