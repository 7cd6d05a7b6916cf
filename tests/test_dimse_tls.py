"""DIMSE over TLS: DCMTK's echoscu with and without certificates."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dimse import SidecarProcess, run

pytestmark = pytest.mark.timeout(120)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and a server and a client certificate it signed."""
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        cwd=d,
    )
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            cwd=d,
        )
    return d


def tls_sidecar(tmp: Path, pki: Path, *, require_client: bool) -> SidecarProcess:
    env = {
        "DICOMWEB_DIMSE_TLS_CERT": str(pki / "server.pem"),
        "DICOMWEB_DIMSE_TLS_KEY": str(pki / "server.key"),
    }
    if require_client:
        env["DICOMWEB_DIMSE_TLS_CA"] = str(pki / "ca.pem")
    return SidecarProcess(tmp / "data", env).start()


@pytest.fixture
def sidecars() -> Iterator[list[SidecarProcess]]:
    started: list[SidecarProcess] = []
    yield started
    for proc in started:
        proc.stop()


def test_tls_server_certificate(tmp_path: Path, pki: Path, sidecars: list[SidecarProcess]) -> None:
    sidecar = tls_sidecar(tmp_path, pki, require_client=False)
    sidecars.append(sidecar)
    address = ["-aec", sidecar.ae_title, "127.0.0.1", str(sidecar.port)]
    secure = run("echoscu", "+tla", "+cf", str(pki / "ca.pem"), *address, timeout=30)
    assert secure.returncode == 0, secure.stdout + secure.stderr
    plain = run("echoscu", "-to", "5", "-ta", "5", *address, timeout=30)
    assert plain.returncode != 0


def test_tls_client_certificate_required(
    tmp_path: Path, pki: Path, sidecars: list[SidecarProcess]
) -> None:
    sidecar = tls_sidecar(tmp_path, pki, require_client=True)
    sidecars.append(sidecar)
    address = ["-aec", sidecar.ae_title, "127.0.0.1", str(sidecar.port)]
    with_cert = run(
        "echoscu",
        "+tls",
        str(pki / "client.key"),
        str(pki / "client.pem"),
        "+cf",
        str(pki / "ca.pem"),
        *address,
        timeout=30,
    )
    assert with_cert.returncode == 0, with_cert.stdout + with_cert.stderr
    anonymous = run("echoscu", "+tla", "+cf", str(pki / "ca.pem"), *address, timeout=30)
    assert anonymous.returncode != 0
