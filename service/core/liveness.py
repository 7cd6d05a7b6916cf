"""Which of the processes sharing one embedded data folder are still running.

The HTTP service and the DIMSE sidecar may share a data folder (local files and one
SQLite index). Each takes claims while it stores; at start-up each clears the claims of
uploads that died with their process. A claim of a process that is still running must
survive that clean-up, however old it is (a 2 GB upload on a slow link takes minutes).

Each process holds an exclusive ``flock`` on its own file, ``<folder>/<token>.lock``,
for as long as it lives; the kernel drops the lock when the process dies, however it
dies. A process is alive exactly when its lock cannot be taken. This works across
containers sharing a volume (where process ids would not), and needs no clock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path

__all__ = ["ProcessLocks"]

_TOKEN = re.compile(r"^[0-9a-f]{1,64}$")


class ProcessLocks:
    """Liveness of processes by token, through lock files in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[str, int] = {}

    def hold(self, token: str) -> None:
        """Mark this process alive under ``token`` until :meth:`close` or exit."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(token), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._held[token] = fd

    def alive(self, token: str) -> bool:
        """Whether the process holding ``token`` runs (this process included)."""
        if token in self._held:
            return True
        if not _TOKEN.match(token):
            return False
        path = self._path(token)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        # Its owner is gone: tidy the file (a crash cannot, a clean exit already did).
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return False

    def close(self) -> None:
        for token, fd in list(self._held.items()):
            with contextlib.suppress(FileNotFoundError):
                self._path(token).unlink()
            os.close(fd)
        self._held.clear()

    def _path(self, token: str) -> Path:
        if not _TOKEN.match(token):
            raise ValueError(f"invalid process token {token!r}")
        return self.folder / f"{token}.lock"
