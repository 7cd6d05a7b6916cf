"""Group commit: writes share transactions, yet each succeeds or fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service.errors import BackendUnavailable
from service.index.sqlite_writer import GroupCommit


def connect(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
    return conn


async def test_a_failing_write_rolls_back_alone(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    writer = GroupCommit(lambda: connect(path), "x", str(tmp_path / "x.write"))

    def insert(k: int) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?, 'a')", (k,))
            if k % 5 == 0:
                conn.execute("INSERT INTO t VALUES (?, 'dup')", (k,))  # fails: duplicate key
            return k

        return fn  # type: ignore[return-value]

    results = await asyncio.gather(
        *(writer.submit(insert(k)) for k in range(1, 41)),
        return_exceptions=True,  # type: ignore[arg-type]
    )
    writer.close()
    failed = [k for k, r in zip(range(1, 41), results, strict=True) if isinstance(r, Exception)]
    assert failed == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results if isinstance(r, Exception))
    rows = {k for (k,) in connect(path).execute("SELECT k FROM t")}
    assert rows == set(range(1, 41)) - set(failed)


async def test_an_unusable_database_fails_every_waiting_write(tmp_path: Path) -> None:
    def broken() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    writer = GroupCommit(broken, "broken", str(tmp_path / "broken.write"))
    with pytest.raises(BackendUnavailable, match="unable to open"):
        await writer.submit(lambda conn: None)
    writer.close()


async def test_writers_sharing_a_lock_file_take_turns(tmp_path: Path) -> None:
    """Two writers on one database, as in two processes (flock locks are per open file,
    so two in one process exclude each other too). With no SQLite busy timeout at all,
    a writer that met the other's transaction would fail with "database is locked";
    taking turns on the lock file, every write succeeds."""
    path = tmp_path / "x.sqlite"
    connect(path).close()
    lock = str(tmp_path / "x.write")
    writers = [GroupCommit(lambda: connect(path, timeout=0), f"w{i}", lock) for i in range(2)]

    def insert(k: int) -> Callable[[sqlite3.Connection], object]:
        return lambda conn: conn.execute("INSERT INTO t VALUES (?, 'a')", (k,))

    await asyncio.gather(*(writers[k % 2].submit(insert(k)) for k in range(400)))
    for writer in writers:
        writer.close()
    assert connect(path).execute("SELECT count(*) FROM t").fetchone() == (400,)


async def test_a_caller_that_stops_waiting_does_not_stop_the_writer(tmp_path: Path) -> None:
    """A cancelled caller (a client gone, a shutdown) drops its answer; its write still
    commits with its batch, and later writes are served. The writer thread once died
    here, answering a future its caller had cancelled, and every later write hung."""
    path = tmp_path / "x.sqlite"
    writer = GroupCommit(lambda: connect(path), "x", str(tmp_path / "x.write"))
    started = threading.Event()

    def slow(conn: sqlite3.Connection) -> int:
        started.set()
        time.sleep(0.2)
        conn.execute("INSERT INTO t VALUES (1, 'slow')")
        return 1

    waiting = asyncio.ensure_future(writer.submit(slow))
    await asyncio.to_thread(started.wait, 5)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    after = await asyncio.wait_for(writer.submit(lambda conn: 2), 5)
    writer.close()
    assert after == 2
    assert connect(path).execute("SELECT k, v FROM t").fetchall() == [(1, "slow")]
