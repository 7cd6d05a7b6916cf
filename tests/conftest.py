"""Fixtures: real service processes on free ports, and a moto server for AWS.

``TEST_BACKEND=aws`` runs the same API tests against the production configuration: every
service process the ``server`` and ``start_server`` fixtures start then keeps its
instances in S3 (a fresh bucket) and its index in DynamoDB (a fresh table) on the
session's moto server. Tests that look inside the embedded backends' files are marked
``embedded_only`` and skipped there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.aws import AWS_ENV, MotoServer, aws_settings
from tests.server import ServerProcess

BACKEND = os.environ.get("TEST_BACKEND", "embedded")
if BACKEND not in ("embedded", "aws"):
    raise pytest.UsageError(f"TEST_BACKEND must be embedded or aws, not {BACKEND!r}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BACKEND == "aws":
        skip = pytest.mark.skip(reason="looks inside the embedded backends' files")
        for item in items:
            if "embedded_only" in item.keywords:
                item.add_marker(skip)


def _backend_env(request: pytest.FixtureRequest, env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the AWS backends when the run asks for them (unless the test chose
    its own storage or index)."""
    if BACKEND != "aws" or "DICOMWEB_STORAGE" in env or "DICOMWEB_INDEX" in env:
        return env
    moto: MotoServer = request.getfixturevalue("moto")
    return {**aws_settings(moto), **env}


@pytest.fixture(scope="session")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One service process with default settings, shared by the API tests."""
    env = _backend_env(request, {})
    proc = ServerProcess(tmp_path_factory.mktemp("server") / "data", env).start()
    yield proc
    proc.stop()


@pytest.fixture
def start_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ServerProcess]]:
    """Start a dedicated service process with the given DICOMWEB_* settings."""
    started: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        settings = {f"DICOMWEB_{k.upper()}": v for k, v in env.items()}
        proc = ServerProcess(
            tmp_path / f"data{len(started)}", _backend_env(request, settings)
        ).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.root, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server (S3 + DynamoDB over HTTP) for the session; AWS_* set to dummies."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
