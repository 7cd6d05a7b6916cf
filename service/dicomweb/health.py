"""Liveness and readiness for orchestrators (Kubernetes probes, load balancers)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from service.dicomweb.common import services
from service.dicomweb.responses import problems

__all__ = ["health", "ready"]


@get("/health", summary="Liveness: the process is up", tags=["Operations"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/ready",
    summary="Readiness: storage and index are usable (503 otherwise)",
    tags=["Operations"],
    responses=problems(503),
)
async def ready(request: Request[Any, Any, Any]) -> dict[str, str]:
    svc = services(request)
    await svc.storage.check()
    await svc.index.check()
    return {"status": "ready"}
