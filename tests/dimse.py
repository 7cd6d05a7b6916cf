"""DIMSE test peers: the sidecar as a real process, DCMTK's storescp as a destination."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.server import free_port, spawn, terminate


def run(
    *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """A DCMTK command (or any), with a timeout; output captured as text."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
    )


class SidecarProcess:
    """``python -m service dimse`` on a free port, with the given data folder."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.ae_title = "DICOMWEB"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
        self.env.update({"DICOMWEB_DATA_DIR": str(data_dir)})
        self.env.update(env or {})
        self.log = data_dir.parent / f"sidecar-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SidecarProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "service", "dimse", "--port", str(self.port)]
        seen = self.log.stat().st_size if self.log.exists() else 0  # earlier runs' lines

        def listening() -> bool:
            return b"listening on" in self.log.read_bytes()[seen:]

        self.proc = spawn(args, self.env, self.log, listening, "sidecar")
        return self

    def stop(self) -> None:
        terminate(self.proc, wait=15)
        self.proc = None

    def jobs(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m service jobs ...`` against this sidecar's data folder."""
        env = {**self.env}
        return subprocess.run(
            [sys.executable, "-m", "service", "jobs", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


class StoreSCP:
    """DCMTK ``storescp`` writing what it receives, bit-preserving, into a folder."""

    def __init__(self, folder: Path, port: int | None = None, ae_title: str = "DEST") -> None:
        self.folder = folder
        self.port = port or free_port()
        self.ae_title = ae_title
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "storescp",
                "-aet",
                self.ae_title,
                "+xa",
                "+B",
                "-od",
                str(self.folder),
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (
                run(
                    "echoscu", "-aec", self.ae_title, "127.0.0.1", str(self.port), timeout=5
                ).returncode
                == 0
            ):
                return self
            time.sleep(0.1)
        raise RuntimeError("storescp did not start")

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(preamble + File Meta, data set) of a Part 10 file, read independently of the
    service's own parser: group 0002 is always Explicit VR Little Endian."""
    pos = 132 if data[128:132] == b"DICM" else 0
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        else:
            pos += 8 + int.from_bytes(data[pos + 6 : pos + 8], "little")
    return data[:pos], data[pos:]
