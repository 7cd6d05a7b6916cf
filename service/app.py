"""The Litestar application: routes, lifespan, and the one place errors become HTTP.

Every error answer is ``application/problem+json`` (RFC 9457) with a ``detail`` that
says what was wrong, whether it came from our :mod:`service.errors` hierarchy or from
Litestar itself (unknown route, wrong method).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp, Receive, Scope, Send

from service import __version__
from service.config import Settings, load_settings
from service.context import open_services
from service.dicomweb.bulkdata import bulkdata
from service.dicomweb.cors import cors_config
from service.dicomweb.frames import retrieve_frames
from service.dicomweb.health import health, ready
from service.dicomweb.qido import search_instances, search_series, search_studies
from service.dicomweb.rendered import rendered, thumbnail
from service.dicomweb.stow import stow
from service.dicomweb.wado import metadata, retrieve
from service.errors import ServiceError
from service.memory import limit_malloc_arenas

__all__ = ["create_app", "create_app_from_env"]

log = logging.getLogger("service")


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    body["detail"] = detail
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def _service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[bytes]:
    if exc.status_code >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
    return _problem(exc.status_code, exc.message, exc.headers or None)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    headers = dict(exc.headers or {})
    return _problem(exc.status_code, str(exc.detail), headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _problem(500, f"internal error: {type(exc).__name__}")


def create_app_from_env() -> Litestar:
    """The app of one of several worker processes (``DICOMWEB_WORKERS``)."""
    return create_app(load_settings())


class _InFlight:
    """Counts the HTTP requests this process is serving, so that background work (the
    metadata warmer) can wait for a pause in them."""

    #: The gap between two requests of one client is not a pause in the load.
    QUIET_SECONDS = 0.1

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    def busy(self) -> bool:
        return self.count > 0 or time.monotonic() - self.last < self.QUIET_SECONDS

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            self.count += 1
            try:
                await app(scope, receive, send)
            finally:
                self.count -= 1
                self.last = time.monotonic()

        return counted


def create_app(settings: Settings) -> Litestar:
    in_flight = _InFlight()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Before the first thread pool starts, so that every worker thread shares them.
        limit_malloc_arenas(settings.malloc_arenas)
        services = await open_services(settings)
        services.metadata.busy = in_flight.busy
        app.state.services = services
        # Everything loaded so far (pydicom's dictionaries, the app, the imports) lives
        # as long as the process: keep the garbage collector from walking it again on
        # every full collection.
        gc.freeze()
        warmer = asyncio.create_task(services.metadata.warm_forever(), name="metadata-warmer")
        try:
            yield
        finally:
            warmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warmer
            await services.close()

    dicomweb = Router(
        path=settings.dicomweb_root or "/",
        route_handlers=[
            stow,
            retrieve,
            retrieve_frames,
            metadata,
            bulkdata,
            search_studies,
            search_series,
            search_instances,
            rendered,
            thumbnail,
        ],
    )
    return Litestar(
        route_handlers=[health, ready, dicomweb],
        lifespan=[lifespan],
        middleware=[in_flight.middleware],
        state=State({}),
        cors_config=cors_config(settings),
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        openapi_config=OpenAPIConfig(
            title="DICOMweb service",
            version=__version__,
            description="DICOMweb (PS3.18): STOW-RS, WADO-RS and QIDO-RS.",
            path="/openapi",
        ),
        debug=False,
    )
