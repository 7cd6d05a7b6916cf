"""STOW-RS (PS3.18 §10.5): ``POST {root}/studies[/{study}]``.

Parses the request's Content-Type, hands the body stream to the store use case, and
writes the PS3.18 response: ``ReferencedSOPSequence`` for what was stored,
``FailedSOPSequence`` with a failure reason (and an ErrorComment in words) for what
was not. 200: all stored; 202: some; 409: none; 400 / 413 / 415: the request itself.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, post

from service.core.stow import InstanceOutcome, StowResult
from service.dicomweb.common import base_url, optional_path_params, services, uids
from service.dicomweb.media import DICOM, DICOM_JSON, parse_media_type
from service.dicomweb.responses import dicom_json, problems
from service.errors import (
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)

__all__ = ["stow"]


def _body_format(content_type: str | None) -> str | None:
    """The multipart boundary, or None for a single application/dicom body."""
    if not content_type:
        raise UnsupportedMediaType(
            'a Content-Type is required: multipart/related; type="application/dicom" '
            "or application/dicom"
        )
    media = parse_media_type(content_type)
    if media.type == DICOM:
        return None
    if media.type != "multipart/related":
        raise UnsupportedMediaType(
            f"Content-Type {media.type} is not accepted; send "
            'multipart/related; type="application/dicom" or application/dicom'
        )
    part_type = media.params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise UnsupportedMediaType(
            f"multipart/related; type={part_type} is not accepted; this service stores "
            "Part 10 files (type=application/dicom)"
        )
    boundary = media.params.get("boundary")
    if not boundary:
        raise MalformedRequest("the multipart/related Content-Type has no boundary parameter")
    return boundary


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _response(result: StowResult, root: str, study_uid: str | None) -> dict[str, Any]:
    referenced, failed = [], []
    for o in result.outcomes:
        item: dict[str, Any] = {
            "00081150": _attr("UI", *([o.sop_class_uid] if o.sop_class_uid else [])),
            "00081155": _attr("UI", *([o.sop_instance_uid] if o.sop_instance_uid else [])),
        }
        if o.stored:
            item["00081190"] = _attr(
                "UR",
                f"{root}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_instance_uid}",
            )
            referenced.append(item)
        else:
            item["00081197"] = _attr("US", o.reason)
            item["00000902"] = _attr("LO", f"part {o.part}: {o.message}")
            failed.append(item)
    body: dict[str, Any] = {}
    studies = {o.study_uid for o in result.outcomes if o.stored}
    if study_uid is not None or len(studies) == 1:
        body["00081190"] = _attr("UR", f"{root}/studies/{study_uid or studies.pop()}")
    if failed:
        body["00081198"] = _attr("SQ", *failed)
    if referenced:
        body["00081199"] = _attr("SQ", *referenced)
    return body


def _warning(outcomes: list[InstanceOutcome]) -> str | None:
    problems = [f"part {o.part}: {o.message}" for o in outcomes if not o.stored]
    if not problems:
        return None
    text = "; ".join(problems).replace('"', "'")
    return f'299 dicomweb "{text[:2000]}"'


@post(
    ["/studies", "/studies/{study:str}"],
    request_max_body_size=None,  # enforced by the store use case, with a DICOM answer
    summary="STOW-RS: store instances",
    description=(
        'Body: multipart/related; type="application/dicom" (one Part 10 file per part) '
        "or a single application/dicom body. Streams each part to storage. Responds "
        "with ReferencedSOPSequence / FailedSOPSequence: 200 all stored, 202 some, "
        "409 none; 400 malformed, 413 too large, 415 unsupported media type."
    ),
    tags=["STOW-RS"],
    status_code=200,
    media_type="application/dicom+json",
    responses={
        202: dicom_json("Some instances stored; FailedSOPSequence lists the others."),
        409: dicom_json("No instance stored; FailedSOPSequence says why for each."),
        **problems(400, 413, 415, 503),
    },
)
async def stow(request: Request[Any, Any, Any]) -> Response[bytes]:
    (study,) = optional_path_params(request, "study")
    svc = services(request)
    if study is not None:
        uids(study)
    boundary = _body_format(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > svc.settings.max_request_bytes:
        raise PayloadTooLarge(
            f"Content-Length {declared} exceeds the limit of {svc.settings.max_request_bytes} "
            "bytes (DICOMWEB_MAX_REQUEST_BYTES); nothing was stored"
        )
    result = await svc.stow.store_body(request.stream(), boundary=boundary, study_uid=study)
    stored = sum(o.stored for o in result.outcomes)
    if result.error is not None and stored == 0:
        raise result.error
    if result.error is not None:
        status = 413 if isinstance(result.error, PayloadTooLarge) else 202
    elif stored == len(result.outcomes):
        status = 200
    elif stored:
        status = 202
    else:
        status = 409
    headers = {}
    warning = _warning(result.outcomes)
    if result.error is not None:
        warning = f'299 dicomweb "{result.error.message}"' + (", " + warning if warning else "")
    if warning:
        headers["Warning"] = warning
    root = base_url(request)
    for study_uid in {o.study_uid for o in result.outcomes if o.stored and o.study_uid}:
        svc.metadata.touch(study_uid, root)
    body = msgspec.json.encode(_response(result, root, study))
    return Response(body, status_code=status, media_type=DICOM_JSON, headers=headers)
