"""OpenAPI descriptions of the answers the DICOMweb routes give besides 200."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi import ResponseSpec

__all__ = ["Problem", "dicom_json", "problems"]


class Problem(msgspec.Struct):
    """An error answer (RFC 9457 ``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str


_DESCRIPTIONS = {
    400: "Malformed request: a bad UID in the path, a bad parameter or an unparseable body.",
    404: "No such study, series or instance is stored.",
    406: "Nothing acceptable to the Accept header can be produced; detail says why.",
    413: "The request body is larger than DICOMWEB_MAX_REQUEST_BYTES.",
    415: "The request's Content-Type is not accepted.",
    416: "The Range asked for lies outside the value; Content-Range gives its size.",
    503: "Storage or index is unavailable.",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS[status],
            media_type="application/problem+json",
            generate_examples=False,
        )
        for status in statuses
    }


def dicom_json(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=dict[str, Any],
        description=description,
        media_type="application/dicom+json",
        generate_examples=False,
    )
