"""One process at a time sets up a SQLite file that several processes share."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["setting_up"]


@contextmanager
def setting_up(path: Path) -> Iterator[None]:
    """Hold the set-up lock of the SQLite file at ``path`` (a file beside it, ``.init``).

    The HTTP workers and the DIMSE sidecar open the same index and job queue as they
    start. Switching a new file to WAL needs the database to itself, and SQLite answers
    "database is locked" at once, without waiting, while another process holds it: so
    the first connection is made, and the schema set up, under this lock.
    """
    with path.with_name(path.name + ".init").open("a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield
