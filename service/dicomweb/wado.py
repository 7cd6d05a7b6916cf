"""WADO-RS (PS3.18 §10.4): instances, series and studies as stored, and their metadata.

Instances stream from storage as ``multipart/related; type="application/dicom"``
(or a single ``application/dicom`` part for one instance), never loaded whole.
Metadata comes from what ingest stored in the index, never from re-reading files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
from litestar import Request, get
from litestar.params import FromPath
from litestar.response import Response, Stream

from service.core.metadata import MetadataDocument, json_array
from service.core.wado import WadoService
from service.dicomweb.common import base_url, optional_path_params, services, uids
from service.dicomweb.conditional import accepts_gzip, etag_matches
from service.dicomweb.media import DICOM, DICOM_JSON, choose_instance_media, choose_json
from service.dicomweb.multipart import closing_delimiter, make_boundary, part_header
from service.dicomweb.responses import problems
from service.imaging.transcode import can_transcode
from service.index.base import InstanceRef

__all__ = ["metadata", "retrieve"]

_ERRORS = problems(400, 404, 406, 503)
_STUDY = "/studies/{study:str}"
_SERIES = _STUDY + "/series/{series:str}"
_INSTANCE = _SERIES + "/instances/{instance:str}"


def _needs_transcoding(ref: InstanceRef, syntax: str) -> bool:
    return syntax not in ("*", ref.transfer_syntax)


def _opening(boundary: str, number: int, syntax: str) -> bytes:
    """What goes before part ``number``'s bytes: the CRLF ending the previous part, the
    delimiter and the part's header."""
    header = part_header(boundary, f"{DICOM}; transfer-syntax={syntax}")
    return b"\r\n" + header if number else header


async def _multipart_body(
    wado: WadoService, refs: list[InstanceRef], boundary: str, syntax: str
) -> AsyncIterator[bytes]:
    for number, ref in enumerate(refs):
        transcode = _needs_transcoding(ref, syntax)
        yield _opening(boundary, number, syntax if transcode else ref.transfer_syntax)
        if transcode:
            yield await wado.transcoded(ref, syntax)
            continue
        async for chunk in wado.content(ref):
            yield chunk
    yield closing_delimiter(boundary)


async def _primed(chunks: AsyncIterator[bytes], count: int) -> AsyncIterator[bytes]:
    """Take the first ``count`` pieces of a body now, before the status line is sent: a
    storage that cannot deliver the first instance then answers with its error (503
    when S3 cannot be reached) instead of a 200 cut off after its headers."""
    ahead: list[bytes] = []
    for _ in range(count):
        try:
            ahead.append(await anext(chunks))
        except StopAsyncIteration:
            break

    async def body() -> AsyncIterator[bytes]:
        for piece in ahead:
            yield piece
        async for piece in chunks:
            yield piece

    return body()


async def _retrieve(
    request: Request[Any, Any, Any], study: str, series: str | None, sop: str | None
) -> Stream:
    uids(study, series, sop)
    wado = services(request).wado
    refs = await wado.instances(study, series, sop)
    choice = choose_instance_media(
        request.headers.get("accept"),
        {r.transfer_syntax for r in refs},
        single_part_ok=sop is not None,
        can_transcode=can_transcode,
    )
    syntax = choice.transfer_syntax
    transcoding = [r for r in refs if _needs_transcoding(r, syntax)]
    await wado.check_transcodable(study, series, sop, transcoding)
    if not choice.multipart:
        ref = refs[0]
        if transcoding:
            body = await wado.transcoded(ref, syntax)
            return Stream(
                iter([body]),
                media_type=f"{DICOM}; transfer-syntax={syntax}",
                headers={"Content-Length": str(len(body))},
            )
        return Stream(
            await _primed(wado.content(ref), 1),
            media_type=f"{DICOM}; transfer-syntax={ref.transfer_syntax}",
            headers={"Content-Length": str(ref.size)},
        )
    boundary = make_boundary()
    headers = {}
    if not transcoding:
        # Every part's size is known up front, so the response has a Content-Length:
        # clients read it without chunked framing and can show progress.
        headers["Content-Length"] = str(_multipart_length(refs, boundary))
    return Stream(
        # The first part's header, then its first bytes from storage.
        await _primed(_multipart_body(wado, refs, boundary, syntax), 2),
        media_type=f'multipart/related; type="{DICOM}"; boundary={boundary}',
        headers=headers,
    )


def _multipart_length(refs: list[InstanceRef], boundary: str) -> int:
    """The length of :func:`_multipart_body` for instances sent as stored."""
    total = len(closing_delimiter(boundary))
    for number, ref in enumerate(refs):
        total += len(_opening(boundary, number, ref.transfer_syntax)) + ref.size
    return total


_RETRIEVE_DOC = (
    'Accept: multipart/related; type="application/dicom" [; transfer-syntax=UID|*] '
    "(instances as stored with transfer-syntax=*), or application/dicom for one "
    "instance. Without transfer-syntax, Explicit VR Little Endian: instances stored "
    "compressed, big endian, deflated or implicit VR are transcoded (also to "
    "1.2.840.10008.1.2 on request). 406 when nothing acceptable can be produced."
)


@get(
    [_STUDY, _SERIES, _INSTANCE],
    summary="Retrieve a study, series or instance",
    description=_RETRIEVE_DOC,
    tags=["WADO-RS"],
    responses=_ERRORS,
)
async def retrieve(request: Request[Any, Any, Any], study: FromPath[str]) -> Stream:
    series, instance = optional_path_params(request, "series", "instance")
    return await _retrieve(request, study, series, instance)


async def _metadata(
    request: Request[Any, Any, Any], study: str, series: str | None, sop: str | None
) -> Response[bytes]:
    uids(study, series, sop)
    choose_json(request.headers.get("accept"))
    svc = services(request)
    root = base_url(request)
    if sop is None:
        return await _cached_metadata(request, study, series, root)
    found = await svc.wado.metadata(study, series, sop)
    return Response(json_array(found, root), media_type=DICOM_JSON)


async def _cached_metadata(
    request: Request[Any, Any, Any], study: str, series: str | None, root: str
) -> Response[bytes]:
    """A study's or series' metadata from its precomputed document, or 304."""
    documents = services(request).metadata
    revision = await documents.revision(study, series)
    etag = MetadataDocument(revision, b"").etag
    headers = {"ETag": etag, "Vary": "Accept-Encoding", "Cache-Control": "no-cache"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(b"", status_code=304, headers=headers)
    doc = await documents.document(study, series, root, revision)
    if accepts_gzip(request.headers.get("accept-encoding")):
        headers["Content-Encoding"] = "gzip"
        return Response(doc.gzipped, media_type=DICOM_JSON, headers=headers)
    body = await anyio.to_thread.run_sync(doc.json)
    return Response(body, media_type=DICOM_JSON, headers=headers)


_METADATA_DOC = (
    "The instances' DICOM JSON (PS3.18 Annex F), bulk data replaced by BulkDataURI. "
    "Accept: application/dicom+json. Study and series metadata carry an ETag (the index "
    "revision): If-None-Match answers 304; sent gzip-compressed when Accept-Encoding "
    "allows."
)


@get(
    [_STUDY + "/metadata", _SERIES + "/metadata", _INSTANCE + "/metadata"],
    summary="Metadata of a study, series or instance",
    description=_METADATA_DOC,
    tags=["WADO-RS"],
    responses=_ERRORS,
)
async def metadata(request: Request[Any, Any, Any], study: FromPath[str]) -> Response[bytes]:
    series, instance = optional_path_params(request, "series", "instance")
    return await _metadata(request, study, series, instance)
