"""WADO-RS rendered and thumbnail resources (PS3.18 §8.3.5, §9.5; Tables 10.4.1-2 and -3).

``/rendered`` of an instance or a frame is one ``image/jpeg`` or ``image/png``; of a
frame list, a study or a series it is ``multipart/related`` with one picture per frame or
per image instance, unless ``Accept`` names an image type, which can carry one picture
only: then the first listed frame, or the image a thumbnail would show, is sent.
``/thumbnail`` is always one picture: the listed frame, the
instance's first frame, the middle image of a series, or that of the study's first
series holding an image. Query parameters: ``window``, ``viewport``, ``quality``;
``annotation`` is not supported and answered with a ``Warning``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, get
from litestar.params import FromPath, QueryParameter
from litestar.response import Response, Stream

from service.core.frames import parse_frame_list
from service.core.rendered import Frame, RenderedService
from service.dicomweb.common import base_url, optional_path_params, services, uids
from service.dicomweb.multipart import closing_delimiter, make_boundary, part_header
from service.dicomweb.rendered_params import (
    choose_image,
    parse_quality,
    parse_viewport,
    parse_window,
)
from service.dicomweb.responses import problems
from service.errors import MalformedRequest, NotAcceptable
from service.imaging.render import RenderOptions, Viewport

__all__ = ["rendered", "thumbnail"]

_ERRORS = problems(400, 404, 406, 503)
_STUDY = "/studies/{study:str}"
_SERIES = _STUDY + "/series/{series:str}"
_INSTANCE = _SERIES + "/instances/{instance:str}"
_FRAMES = _INSTANCE + "/frames/{frames:str}"


def _warnings(annotation: str | None) -> dict[str, str] | None:
    if annotation is None:
        return None
    return {
        "Warning": '299 dicomweb "The annotation parameter is not supported; the image is '
        'rendered without annotations."'
    }


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


async def _picture(
    request: Request[Any, Any, Any],
    svc: RenderedService,
    frame: Frame,
    options: RenderOptions,
    annotation: str | None,
) -> Response[bytes]:
    """One picture, or 304 when the client holds it already (If-None-Match), which
    spares reading and decoding the instance."""
    etag = svc.etag(frame, options)
    headers = {"ETag": etag, **(_warnings(annotation) or {})}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(b"", status_code=304, headers=headers)
    body = await svc.render(frame, options)
    return Response(body, media_type=options.media_type, headers=headers)


def _options(
    media_type: str, quality: str | None, window: str | None, viewport: str | None
) -> RenderOptions:
    return RenderOptions(
        media_type=media_type,
        quality=parse_quality(quality),
        window=parse_window(window),
        viewport=parse_viewport(viewport),
    )


def _location(root: str, frame: Frame) -> str:
    ref = frame.ref
    return (
        f"{root}/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_uid}"
        f"/frames/{frame.number}/rendered"
    )


async def _multipart(
    svc: RenderedService,
    frames: list[Frame],
    first: bytes,
    options: RenderOptions,
    boundary: str,
    root: str,
) -> AsyncIterator[bytes]:
    for number, frame in enumerate(frames):
        if number == 0:
            body = first
        else:
            # The status line is sent; a picture that fails now is left out.
            try:
                body = await svc.render(frame, options)
            except (MalformedRequest, NotAcceptable):
                continue
        header = part_header(
            boundary, options.media_type, {"Content-Location": _location(root, frame)}
        )
        yield (b"\r\n" if number else b"") + header + body
    yield closing_delimiter(boundary)


_QUALITY = QueryParameter(
    name="quality", required=False, description="JPEG quality 1-100 (default 90)."
)
_WINDOW = QueryParameter(
    name="window",
    required=False,
    description="center,width[,function]: function linear (default), linear-exact or sigmoid.",
)
_VIEWPORT = QueryParameter(
    name="viewport",
    required=False,
    description="vw,vh[,sx,sy,sw,sh]: fit the (source region of the) image into vw x vh.",
)
_ANNOTATION = QueryParameter(
    name="annotation", required=False, description="Not supported: ignored with a Warning."
)

_RENDERED_DOC = (
    "Accept: image/jpeg (default) or image/png: one picture (an instance by its first "
    "frame, a frame list by its first frame, a study or series by the image its thumbnail "
    "shows). multipart/related; type=image/jpeg|png, or */* for a study, a series or "
    "several frames: one part per image instance (its first frame) or per frame."
)


@get(
    [_STUDY + "/rendered", _SERIES + "/rendered", _INSTANCE + "/rendered", _FRAMES + "/rendered"],
    summary="Rendered study, series, instance or frames",
    description=_RENDERED_DOC,
    tags=["WADO-RS"],
    responses=_ERRORS,
)
async def rendered(
    request: Request[Any, Any, Any],
    study: FromPath[str],
    quality: Annotated[str | None, _QUALITY] = None,
    window: Annotated[str | None, _WINDOW] = None,
    viewport: Annotated[str | None, _VIEWPORT] = None,
    annotation: Annotated[str | None, _ANNOTATION] = None,
) -> Response[bytes] | Stream:
    series, instance, frames = optional_path_params(request, "series", "instance", "frames")
    uids(study, series, instance)
    numbers = parse_frame_list(frames) if frames is not None else None
    several = instance is None or (numbers is not None and len(numbers) > 1)
    media_type, multipart = choose_image(request.headers.get("accept"), several=several)
    options = _options(media_type, quality, window, viewport)
    svc = services(request).rendered
    if not multipart:
        if instance is None:
            frame = await svc.representative(study, series)
        else:
            frame = (await svc.frames(study, series, instance, numbers))[0]
        return await _picture(request, svc, frame, options, annotation)
    targets = await svc.frames(study, series, instance, numbers)
    first = await svc.render(targets[0], options)
    boundary = make_boundary()
    return Stream(
        _multipart(svc, targets, first, options, boundary, base_url(request)),
        media_type=f'multipart/related; type="{media_type}"; boundary={boundary}',
        headers=_warnings(annotation),
    )


_THUMBNAIL_DOC = (
    "One image/jpeg (default) or image/png, fitted into DICOMWEB_THUMBNAIL_SIZE pixels "
    "square unless a viewport is given (never enlarged). Study: the middle image of the "
    "first series (by Series Number) holding images; series: its middle image (by "
    "Instance Number); instance: its first frame; frames: the first listed frame."
)


@get(
    [
        _STUDY + "/thumbnail",
        _SERIES + "/thumbnail",
        _INSTANCE + "/thumbnail",
        _FRAMES + "/thumbnail",
    ],
    summary="Thumbnail of a study, series, instance or frame",
    description=_THUMBNAIL_DOC,
    tags=["WADO-RS"],
    responses=_ERRORS,
)
async def thumbnail(
    request: Request[Any, Any, Any],
    study: FromPath[str],
    quality: Annotated[str | None, _QUALITY] = None,
    window: Annotated[str | None, _WINDOW] = None,
    viewport: Annotated[str | None, _VIEWPORT] = None,
    annotation: Annotated[str | None, _ANNOTATION] = None,
) -> Response[bytes]:
    series, instance, frames = optional_path_params(request, "series", "instance", "frames")
    uids(study, series, instance)
    numbers = parse_frame_list(frames) if frames is not None else None
    media_type, _ = choose_image(request.headers.get("accept"), several=False)
    options = _options(media_type, quality, window, viewport)
    svc = services(request).rendered
    if options.viewport is None:
        size = svc.thumbnail_size
        options = options._replace(viewport=Viewport(size, size), shrink_only=True)
    frame = await svc.representative(study, series, instance, numbers)
    return await _picture(request, svc, frame, options, annotation)
