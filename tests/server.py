"""A real service process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    args: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool], what: str
) -> subprocess.Popen[bytes]:
    """Start a child process logging to ``log``; return once ``ready()`` says it serves."""
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()}")
        if ready():
            return proc
        time.sleep(0.05)
    terminate(proc)
    raise RuntimeError(f"{what} did not start: {log.read_text()}")


def answers(url: str) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers 200."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


def terminate(proc: subprocess.Popen[bytes] | None, wait: float = 10) -> None:
    """Stop a child process: SIGTERM, then SIGKILL after ``wait`` seconds."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ServerProcess:
    """``python -m service serve`` as a child process, with its own data folder."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = self.url + "/dicom-web"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
        self.env.update(env or {})
        self.log = data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "service", "serve", "--port", str(self.port)]
        args += ["--data-dir", str(self.data_dir)]
        self.proc = spawn(args, self.env, self.log, answers(self.url + "/health"), "server")
        return self

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None
