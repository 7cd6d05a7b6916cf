"""CORS for browser viewers (OHIF, Slim, cornerstone apps on another origin).

Preflight requests are answered for the headers DICOMweb clients send, and the headers
viewers read from responses (Content-Type with its boundary, Warning, Content-Location,
ETag, Content-Range) are exposed. The default allows any origin on the local machine,
which is what a viewer in development needs and nothing more.
"""

from __future__ import annotations

from dataclasses import replace

from litestar.config.cors import CORSConfig

from service.config import Settings

__all__ = ["LOCALHOST_ORIGINS", "cors_config"]

#: Any scheme and port on the loopback names: ``http://localhost:3000``, ``http://[::1]``.
LOCALHOST_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?"

_REQUEST_HEADERS = [
    "Accept",
    "Accept-Encoding",
    "Authorization",
    "Content-Type",
    "Cache-Control",
    "If-None-Match",
    "If-Modified-Since",
    "Range",
    "X-Requested-With",
]
_EXPOSED_HEADERS = [
    "Content-Type",
    "Content-Length",
    "Content-Location",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "Location",
    "Warning",
]


def cors_config(settings: Settings) -> CORSConfig | None:
    """The CORS policy the settings ask for; ``None`` when CORS is switched off."""
    origins = settings.cors_origin_list
    if [o.lower() for o in origins] == ["none"]:
        return None
    common = CORSConfig(
        allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
        allow_headers=_REQUEST_HEADERS,
        expose_headers=_EXPOSED_HEADERS,
        allow_credentials=settings.cors_allow_credentials,
        max_age=600,
    )
    if not origins:
        return replace(common, allow_origins=[], allow_origin_regex=LOCALHOST_ORIGINS)
    return replace(common, allow_origins=origins)
