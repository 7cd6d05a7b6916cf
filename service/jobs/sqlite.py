"""SQLite JobQueue, the embedded default: its own database file beside the index, WAL.

Claims are one ``UPDATE ... RETURNING`` inside ``BEGIN IMMEDIATE``, so two workers (in
one process or several sharing the file) never take the same attempt of a job.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import msgspec

from service.errors import BackendUnavailable
from service.jobs.base import Job, JobQueue, JobRecord, JobState, job_decoder
from service.sqlite_setup import setting_up

__all__ = ["SqliteJobQueue"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_at REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, run_at);
"""
_COLUMNS = "id, body, state, attempts, run_at, created_at, updated_at, message"
_encoder = msgspec.json.Encoder()


def _record(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(
        id=row[0],
        job=job_decoder().decode(row[1]),
        state=row[2],
        attempts=row[3],
        run_at=row[4],
        created_at=row[5],
        updated_at=row[6],
        message=row[7],
    )


class SqliteJobQueue(JobQueue):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        # One connection, used by one thread at a time: jobs are few and small.
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> SqliteJobQueue:
        if not url.startswith("sqlite:///"):
            raise ValueError(f"not a sqlite:/// URL: {url!r}")
        return cls("/" + url[len("sqlite:///") :].lstrip("/"))

    async def open(self) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Every worker opens the queue: one at a time (see setting_up).
            with setting_up(self.path):
                conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=30
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            self._conn = conn

        await anyio.to_thread.run_sync(connect)

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            with self._lock:
                conn = self._conn
                if conn is None:
                    raise BackendUnavailable(f"job queue {self.path} is not open")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    return result
                except sqlite3.OperationalError as exc:
                    raise BackendUnavailable(f"SQLite job queue {self.path}: {exc}") from exc

        return await anyio.to_thread.run_sync(run)

    async def enqueue(self, job: Job, *, run_at: float | None = None) -> str:
        job_id = uuid.uuid4().hex
        now = time.time()
        row = (job_id, _encoder.encode(job), "pending", 0, run_at or now, now, now, "")
        await self._tx(
            lambda c: c.execute(f"INSERT INTO jobs ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", row)
        )
        return job_id

    async def claim(self, lease: float) -> JobRecord | None:
        def take(conn: sqlite3.Connection) -> JobRecord | None:
            now = time.time()
            row = conn.execute(
                "SELECT id FROM jobs WHERE state IN ('pending', 'running') AND run_at <= ?"
                " ORDER BY run_at LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            taken = conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, run_at = ?,"
                f" updated_at = ? WHERE id = ? RETURNING {_COLUMNS}",
                (now + lease, now, row[0]),
            ).fetchone()
            return _record(taken)

        return await self._tx(take)

    async def _finish(self, job_id: str, attempt: int, sets: str, values: tuple[Any, ...]) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"UPDATE jobs SET {sets}, updated_at = ? WHERE id = ? AND attempts = ?"
                " AND state = 'running'",
                (*values, time.time(), job_id, attempt),
            )
            return cursor.rowcount == 1

        return await self._tx(update)

    async def complete(self, job_id: str, attempt: int, message: str = "") -> bool:
        return await self._finish(job_id, attempt, "state = 'done', message = ?", (message,))

    async def fail(self, job_id: str, attempt: int, error: str, retry_at: float | None) -> bool:
        if retry_at is None:
            return await self._finish(job_id, attempt, "state = 'dead', message = ?", (error,))
        return await self._finish(
            job_id, attempt, "state = 'pending', message = ?, run_at = ?", (error, retry_at)
        )

    async def get(self, job_id: str) -> JobRecord | None:
        def select(conn: sqlite3.Connection) -> JobRecord | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return _record(row) if row else None

        return await self._tx(select)

    async def list(self, state: JobState | None = None, limit: int = 1000) -> list[JobRecord]:
        def select(conn: sqlite3.Connection) -> list[JobRecord]:
            where, params = ("WHERE state = ?", (state,)) if state else ("", ())
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY created_at, id LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [_record(r) for r in rows]

        return await self._tx(select)

    async def retry(self, job_id: str) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cursor = conn.execute(
                "UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?"
                " WHERE id = ? AND state = 'dead'",
                (now, now, job_id),
            )
            return cursor.rowcount == 1

        return await self._tx(update)

    async def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
