"""Several processes (HTTP workers, the DIMSE sidecar) opening one new SQLite index or
job queue."""

from __future__ import annotations

import asyncio
import fcntl
import multiprocessing
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from service.index.sqlite import SqliteIndex
from service.jobs.sqlite import SqliteJobQueue


async def _open_and_close(kind: type[SqliteIndex | SqliteJobQueue], path: str | Path) -> None:
    opened = kind(path)
    await opened.open()
    await opened.close()


def _open_in_process(path: str, barrier: Barrier, results: Queue[str]) -> None:
    barrier.wait()
    try:
        asyncio.run(_open_and_close(SqliteIndex, path))
        results.put("ok")
    except Exception as exc:
        results.put(repr(exc))


@pytest.mark.parametrize("kind", [SqliteIndex, SqliteJobQueue])
def test_the_first_connection_waits_for_the_opener_that_sets_the_file_up(
    tmp_path: Path, kind: type[SqliteIndex | SqliteJobQueue]
) -> None:
    """Switching a new file to WAL needs the database to itself, and SQLite answers
    "database is locked" at once when another process is setting it up: so nothing
    touches the file before the set-up lock is held."""
    path = tmp_path / "index.sqlite"
    done = threading.Event()
    errors: list[BaseException] = []

    def open_index() -> None:
        try:
            asyncio.run(_open_and_close(kind, path))
        except BaseException as exc:
            errors.append(exc)
        done.set()

    with (tmp_path / "index.sqlite.init").open("a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # another opener is setting the index up
        thread = threading.Thread(target=open_index)
        thread.start()
        time.sleep(0.3)
        assert not path.exists(), "connected before holding the set-up lock"
        assert not done.is_set()
    thread.join(30)
    assert done.is_set()
    assert errors == []
    assert path.exists()


def test_processes_opening_a_new_index_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    for round_ in range(3):
        path = str(tmp_path / f"index-{round_}.sqlite")
        barrier = context.Barrier(4)
        results = context.Queue()
        processes = [
            context.Process(target=_open_in_process, args=(path, barrier, results))
            for _ in range(4)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(30)
        assert outcomes == ["ok"] * 4
