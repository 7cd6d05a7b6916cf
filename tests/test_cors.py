"""CORS as browser viewers need it: preflight, allowed and refused origins, exposed
headers, and the settings that choose the policy."""

from __future__ import annotations

import httpx
import pytest

from service.config import ConfigError, load_settings
from tests.dicomgen import make_instance, new_uid
from tests.helpers import multipart, stow_headers

VIEWER = "http://localhost:3000"


def preflight(root: str, path: str, origin: str, headers: str = "accept") -> httpx.Response:
    return httpx.options(
        root + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": headers,
        },
    )


def test_default_lets_a_local_viewer_in(server) -> None:  # type: ignore[no-untyped-def]
    study = new_uid()
    with httpx.Client(base_url=server.root) as client:
        r = client.post(
            "/studies", content=multipart(make_instance(study=study)), headers=stow_headers()
        )
        assert r.status_code == 200
    for origin in (VIEWER, "http://127.0.0.1:8000", "https://localhost", "http://[::1]:5173"):
        pre = preflight(server.root, f"/studies/{study}/metadata", origin, "accept,authorization")
        assert pre.status_code == 204, origin
        assert pre.headers["access-control-allow-origin"] == origin
        allowed = pre.headers["access-control-allow-headers"].lower()
        for header in ("accept", "authorization", "content-type", "if-none-match", "range"):
            assert header in allowed
    r = httpx.get(
        f"{server.root}/studies/{study}/metadata",
        headers={"Origin": VIEWER, "Accept": "application/dicom+json"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == VIEWER
    exposed = r.headers["access-control-expose-headers"].lower()
    for header in ("content-type", "warning", "content-location", "etag"):
        assert header in exposed
    assert "origin" in r.headers["vary"].lower()


def test_default_refuses_other_origins(server) -> None:  # type: ignore[no-untyped-def]
    for origin in (
        "http://evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1.nip.io",
    ):
        pre = preflight(server.root, "/studies", origin)
        assert pre.status_code == 400, origin
        assert "access-control-allow-origin" not in pre.headers
        r = httpx.get(server.root + "/studies", headers={"Origin": origin})
        assert r.status_code == 200  # the server answers; the browser withholds it
        assert "access-control-allow-origin" not in r.headers


def test_listed_origins_only(start_server) -> None:  # type: ignore[no-untyped-def]
    proc = start_server(cors_origins="https://viewer.example.org, https://slim.example.org/")
    ok = preflight(proc.root, "/studies", "https://slim.example.org")
    assert ok.headers["access-control-allow-origin"] == "https://slim.example.org"
    assert preflight(proc.root, "/studies", VIEWER).status_code == 400


def test_any_origin_and_none(start_server) -> None:  # type: ignore[no-untyped-def]
    anyone = start_server(cors_origins="*")
    r = httpx.get(anyone.root + "/studies", headers={"Origin": "https://x.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    off = start_server(cors_origins="none")
    r = httpx.get(off.root + "/studies", headers={"Origin": VIEWER})
    assert "access-control-allow-origin" not in r.headers


def test_credentials_are_allowed_only_for_named_origins(start_server) -> None:  # type: ignore[no-untyped-def]
    proc = start_server(cors_origins="https://viewer.example.org", cors_allow_credentials="true")
    pre = preflight(proc.root, "/studies", "https://viewer.example.org")
    assert pre.headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DICOMWEB_CORS_ORIGINS": "*", "DICOMWEB_CORS_ALLOW_CREDENTIALS": "true"}, "'*'"),
        ({"DICOMWEB_CORS_ORIGINS": "viewer.example.org"}, "is not an origin"),
        ({"DICOMWEB_CORS_ORIGINS": "https://viewer.example.org/app"}, "is not an origin"),
    ],
)
def test_bad_cors_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)
