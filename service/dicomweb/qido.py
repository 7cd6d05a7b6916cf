"""QIDO-RS (PS3.18 §10.6): search for studies, series and instances.

Answers ``application/dicom+json``: an array of DICOM JSON objects, ``[]`` when nothing
matches (200, never 204). A ``Warning: 299`` header says when more results exist than
the page holds, names search keys that were ignored because they cannot be matched
on here, and passes on what the index says about how it searched (the DynamoDB index's
bounded scan).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from service.core.qido import Search, parse_search
from service.core.search import Level
from service.dicomweb.common import base_url, optional_path_params, services, uids
from service.dicomweb.media import DICOM_JSON, choose_json
from service.dicomweb.responses import problems

__all__ = ["search_instances", "search_series", "search_studies"]

_DOC = (
    "Matching keys by keyword or tag (single value, `*`/`?` wildcards, date/time ranges "
    "`a-b`, UID lists, universal `key=`); `includefield` (keyword, tag or `all`, "
    "repeatable, comma-separated); `limit`, `offset`; `fuzzymatching=true` for person "
    "names. See docs/conformance.md."
)


async def _search(
    request: Request[Any, Any, Any], level: Level, study: str | None, series: str | None
) -> Response[bytes]:
    if study is not None:
        uids(study, series)
    choose_json(request.headers.get("accept"))
    svc = services(request)
    search: Search = parse_search(
        request.query_params.multi_items(),
        level=level,
        study_uid=study,
        series_uid=series,
        default_limit=svc.settings.qido_default_limit,
        max_limit=svc.settings.qido_max_limit,
    )
    results, more, note = await svc.qido.search(search, base_url(request))
    warnings = [f'299 dicomweb "{note}"'] if note else []
    if search.ignored:
        warnings.append(
            '299 dicomweb "The following attributes are not supported for matching and '
            f'were ignored: {", ".join(search.ignored)}"'
        )
    if more:
        next_offset = search.query.offset + search.query.limit
        warnings.append(
            f'299 dicomweb "The results exceed this page of {search.query.limit}. '
            f'Additional results can be requested with offset={next_offset}."'
        )
    headers = {"Warning": ", ".join(warnings)} if warnings else None
    return Response(b"[" + b",".join(results) + b"]", media_type=DICOM_JSON, headers=headers)


_ERRORS = problems(400, 406, 503)


@get(
    "/studies", summary="Search for studies", description=_DOC, tags=["QIDO-RS"], responses=_ERRORS
)
async def search_studies(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _search(request, Level.STUDY, None, None)


@get(
    ["/series", "/studies/{study:str}/series"],
    summary="Search for series",
    description=_DOC,
    tags=["QIDO-RS"],
    responses=_ERRORS,
)
async def search_series(request: Request[Any, Any, Any]) -> Response[bytes]:
    (study,) = optional_path_params(request, "study")
    return await _search(request, Level.SERIES, study, None)


@get(
    [
        "/instances",
        "/studies/{study:str}/instances",
        "/studies/{study:str}/series/{series:str}/instances",
    ],
    summary="Search for instances",
    description=_DOC,
    tags=["QIDO-RS"],
    responses=_ERRORS,
)
async def search_instances(request: Request[Any, Any, Any]) -> Response[bytes]:
    study, series = optional_path_params(request, "study", "series")
    return await _search(request, Level.INSTANCE, study, series)
