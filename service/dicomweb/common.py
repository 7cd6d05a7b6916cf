"""Helpers shared by the DICOMweb handlers: services, URLs, UID path parameters."""

from __future__ import annotations

from typing import Any

from litestar import Request

from service.context import Services
from service.dicom.uid import require_uid

__all__ = ["base_url", "optional_path_params", "services", "uids"]


def services(request: Request[Any, Any, Any]) -> Services:
    svc: Services = request.app.state.services
    return svc


def optional_path_params(request: Request[Any, Any, Any], *names: str) -> tuple[str | None, ...]:
    """The path parameters a handler of several paths has on some of them only.

    They are read here, not declared as the handler's arguments: Litestar fills an
    argument that the matched path lacks from the query string, so ``?instance=X`` on
    a series URL would have narrowed the retrieve to one instance, and ``?study=X`` on
    ``POST /studies`` would have held the upload to that study.
    """
    return tuple(request.path_params.get(name) for name in names)


def base_url(request: Request[Any, Any, Any]) -> str:
    """The DICOMweb root as clients reach it, without a trailing slash."""
    svc = services(request)
    if svc.settings.public_url:
        return svc.settings.public_url.rstrip("/") + svc.settings.dicomweb_root
    return str(request.base_url).rstrip("/") + svc.settings.dicomweb_root


def uids(
    study: str, series: str | None = None, sop: str | None = None
) -> tuple[str, str | None, str | None]:
    """Check the UIDs of a resource path; a malformed one is a 400 before any lookup."""
    require_uid(study, "StudyInstanceUID")
    if series is not None:
        require_uid(series, "SeriesInstanceUID")
    if sop is not None:
        require_uid(sop, "SOPInstanceUID")
    return study, series, sop
