"""Shared assertions for the end-to-end tests."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pydicom.data

from tests.aws import aws_snapshot
from tests.server import ServerProcess

BOUNDARY = "test-boundary-7f3a"


PYDICOM_DATA = Path(pydicom.data.__file__).parent


def pydicom_file(name: str) -> bytes:
    """A file bundled with pydicom (never one it would download)."""
    for folder in ("test_files", "charset_files"):
        path = PYDICOM_DATA / folder / name
        if path.is_file():
            return path.read_bytes()
    raise FileNotFoundError(f"{name} is not bundled with pydicom")


def multipart(
    *parts: bytes, boundary: str = BOUNDARY, part_type: str = "application/dicom"
) -> bytes:
    out = []
    for part in parts:
        out.append(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        out.append(part)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def stow_headers(boundary: str = BOUNDARY) -> dict[str, str]:
    return {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }


def snapshot(server: ServerProcess) -> dict[str, Any]:
    """What is stored: every blob's hash, every index row, and leftovers."""
    if "DICOMWEB_INDEX" in server.env and "DICOMWEB_STORAGE" in server.env:
        return aws_snapshot(server.env)
    blobs = server.data_dir / "blobs"
    files = {
        str(p.relative_to(blobs)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(blobs.rglob("*"))
        if p.is_file() and ".tmp" not in p.parts and "cache" not in p.parts
    }
    with sqlite3.connect(server.data_dir / "index.sqlite") as conn:
        rows = conn.execute(
            "SELECT sop_uid, blob_key, sha256 FROM instances ORDER BY sop_uid"
        ).fetchall()
        claims = conn.execute("SELECT count(*) FROM claims").fetchone()[0]
    temp = [p.name for p in (blobs / ".tmp").glob("*")]
    return {"files": files, "rows": rows, "claims": claims, "temp": temp}


def failures(body: dict[str, Any]) -> list[tuple[int, str]]:
    """(reason, comment) of every FailedSOPSequence item."""
    items = body.get("00081198", {}).get("Value", [])
    return [(i["00081197"]["Value"][0], i["00000902"]["Value"][0]) for i in items]


def referenced(body: dict[str, Any]) -> list[str]:
    items = body.get("00081199", {}).get("Value", [])
    return [i["00081155"]["Value"][0] for i in items]
