"""SQLite Index, the embedded default.

One database file in WAL mode: readers never block the writer. Each worker thread
gets its own connection; writes are serialised by SQLite's own lock (``BEGIN
IMMEDIATE`` with a busy timeout). ``synchronous=FULL`` so an acknowledged STOW survives
power loss, not only a process crash.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import msgspec

from service import offload
from service.core.search import Query, SearchPage
from service.errors import BackendUnavailable
from service.index.base import Claim, Claimed, Index, InstanceRecord, InstanceRef
from service.index.sqlite_schema import PLANNER_STATISTICS, SCHEMA, SCHEMA_VERSION, number
from service.index.sqlite_search import run_search, upsert_levels
from service.index.sqlite_writer import GroupCommit
from service.sqlite_setup import setting_up

__all__ = ["SqliteIndex"]

T = TypeVar("T")

_REF_COLUMNS = (
    "store, study_uid, series_uid, sop_uid, sop_class_uid, transfer_syntax, blob_key, size, sha256"
)
_ORDER = "ORDER BY series_uid, instance_number IS NULL, instance_number, sop_uid"


def _ref(row: tuple[Any, ...]) -> InstanceRef:
    return InstanceRef(
        store=row[0],
        study_uid=row[1],
        series_uid=row[2],
        sop_uid=row[3],
        sop_class_uid=row[4],
        transfer_syntax=row[5],
        blob_key=row[6],
        size=row[7],
        sha256=row[8],
    )


def _select_ref(conn: sqlite3.Connection, store: str, sop_uid: str) -> InstanceRef | None:
    row = conn.execute(
        f"SELECT {_REF_COLUMNS} FROM instances WHERE store = ? AND sop_uid = ?",  # noqa: S608
        (store, sop_uid),
    ).fetchone()
    return _ref(row) if row else None


def _insert_claim(
    conn: sqlite3.Connection, store: str, sop_uid: str, blob_key: str, owner: str
) -> bool:
    """Take the claim unless another upload holds it; True if taken."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO claims VALUES (?, ?, ?, ?, ?)",
        (store, sop_uid, blob_key, owner, time.time()),
    )
    return cursor.rowcount == 1


def _seed_statistics(conn: sqlite3.Connection) -> None:
    conn.execute("ANALYZE")  # creates sqlite_stat1
    conn.execute("DELETE FROM sqlite_stat1")
    conn.executemany("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", PLANNER_STATISTICS)
    conn.execute("ANALYZE sqlite_schema")  # load them into the planner


def _attributes_json(attributes: dict[str, str]) -> str:
    # msgspec: a tenth of json.dumps(ensure_ascii=False)'s time, on every stored instance.
    return msgspec.json.encode(attributes).decode()


class SqliteIndex(Index):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer: GroupCommit | None = None

    @classmethod
    def from_url(cls, url: str) -> SqliteIndex:
        if not url.startswith("sqlite:///"):
            raise ValueError(f"not a sqlite:/// URL: {url!r}")
        return cls("/" + url[len("sqlite:///") :].lstrip("/"))

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN ourselves, so a write transaction
            # takes the lock up front (IMMEDIATE) instead of failing at first write.
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            # Each write of a group commit runs in its own SAVEPOINT, whose undo pages
            # SQLite spilled to a temporary file past 64 KiB: 38 pwrite calls per
            # instance (strace). In memory they cost no system call; a crash needs none
            # of them (the WAL is what recovers).
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._blocking(lambda: fn(self._connect()))

    async def _blocking(self, fn: Callable[[], T]) -> T:
        def call() -> T:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                raise BackendUnavailable(f"SQLite index {self.path}: {exc}") from exc

        # Reads and schema set-up only (writes go through the group commit): safe to
        # abandon if the caller is cancelled.
        return await offload.call(call)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; return once it is durable."""
        writer = self._writer
        if writer is None:
            raise BackendUnavailable(f"SQLite index {self.path} is not open")
        return await writer.submit(fn)

    async def open(self) -> None:
        def create() -> None:
            # One process creates and seeds a new index while the others wait; the
            # first connection too is made under the lock (see setting_up).
            with setting_up(self.path):
                set_up(self._connect())

        def set_up(conn: sqlite3.Connection) -> None:
            conn.executescript(SCHEMA)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                # Before the first release there is no migration: re-ingest into a new index.
                raise BackendUnavailable(
                    f"index {self.path} has schema version {version}, this service needs "
                    f"{SCHEMA_VERSION}; move it aside and store the instances again"
                )
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if version == 0:
                _seed_statistics(conn)

        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._blocking(create)
        self._writer = GroupCommit(
            self._connect, str(self.path), str(self.path.with_name(self.path.name + ".write"))
        )

    async def claim(self, store: str, sop_uid: str, blob_key: str, owner: str) -> bool:
        return await self._write(lambda conn: _insert_claim(conn, store, sop_uid, blob_key, owner))

    async def claim_instance(
        self,
        store: str,
        sop_uid: str,
        owner: str,
        key_for: Callable[[InstanceRef | None], str],
    ) -> Claimed | None:
        # One write transaction: nothing can commit between the lookup and the claim, so
        # the caller needs no second lookup, and the whole step is one trip to the writer.
        def claim(conn: sqlite3.Connection) -> Claimed | None:
            existing = _select_ref(conn, store, sop_uid)
            key = key_for(existing)
            if not _insert_claim(conn, store, sop_uid, key, owner):
                return None
            return Claimed(existing=existing, blob_key=key)

        return await self._write(claim)

    async def release(self, store: str, sop_uid: str, owner: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                "DELETE FROM claims WHERE store = ? AND sop_uid = ? AND owner = ?",
                (store, sop_uid, owner),
            )
        )

    async def commit(self, record: InstanceRecord, owner: str) -> None:
        row = (
            record.store,
            record.sop_uid,
            record.study_uid,
            record.series_uid,
            record.sop_class_uid,
            record.transfer_syntax,
            number(record.attributes.get("InstanceNumber")),
            record.blob_key,
            record.size,
            record.sha256,
            _attributes_json(record.attributes),
            record.metadata,
            record.layout,
            record.stored_at or time.time(),
        )

        def upsert(conn: sqlite3.Connection) -> None:
            previous = conn.execute(
                "SELECT study_uid, series_uid FROM instances WHERE store = ? AND sop_uid = ?",
                (record.store, record.sop_uid),
            ).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row
            )
            upsert_levels(conn, record, previous)
            conn.execute(
                "DELETE FROM claims WHERE store = ? AND sop_uid = ? AND owner = ?",
                (record.store, record.sop_uid, owner),
            )

        await self._write(upsert)

    async def find(self, store: str, sop_uid: str) -> InstanceRef | None:
        return await self._run(lambda conn: _select_ref(conn, store, sop_uid))

    @staticmethod
    def _where(
        store: str, study_uid: str, series_uid: str | None, sop_uid: str | None
    ) -> tuple[str, tuple[str, ...]]:
        clauses, params = ["store = ?", "study_uid = ?"], [store, study_uid]
        if series_uid is not None:
            clauses.append("series_uid = ?")
            params.append(series_uid)
        if sop_uid is not None:
            clauses.append("sop_uid = ?")
            params.append(sop_uid)
        return " AND ".join(clauses), tuple(params)

    async def instances(
        self,
        store: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[InstanceRef]:
        where, params = self._where(store, study_uid, series_uid, sop_uid)

        def select(conn: sqlite3.Connection) -> list[InstanceRef]:
            rows = conn.execute(
                f"SELECT {_REF_COLUMNS} FROM instances WHERE {where} {_ORDER}",  # noqa: S608
                params,
            ).fetchall()
            return [_ref(r) for r in rows]

        return await self._run(select)

    async def revision(
        self, store: str, study_uid: str, series_uid: str | None = None
    ) -> int | None:
        if series_uid is None:
            sql = "SELECT revision FROM studies WHERE store = ? AND study_uid = ?"
            params: tuple[str, ...] = (store, study_uid)
        else:
            sql = "SELECT revision FROM series WHERE store = ? AND study_uid = ? AND series_uid = ?"
            params = (store, study_uid, series_uid)

        def select(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else int(row[0])

        return await self._run(select)

    async def metadata(
        self,
        store: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[tuple[InstanceRef, bytes]]:
        return await self._with_column("metadata", store, study_uid, series_uid, sop_uid)

    async def layouts(
        self,
        store: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[tuple[InstanceRef, bytes]]:
        return await self._with_column("layout", store, study_uid, series_uid, sop_uid)

    async def _with_column(
        self,
        column: str,
        store: str,
        study_uid: str,
        series_uid: str | None,
        sop_uid: str | None,
    ) -> list[tuple[InstanceRef, bytes]]:
        where, params = self._where(store, study_uid, series_uid, sop_uid)

        def select(conn: sqlite3.Connection) -> list[tuple[InstanceRef, bytes]]:
            rows = conn.execute(
                f"SELECT {_REF_COLUMNS}, {column} FROM instances WHERE {where} {_ORDER}",  # noqa: S608
                params,
            ).fetchall()
            return [(_ref(r), bytes(r[9])) for r in rows]

        return await self._run(select)

    async def search(self, store: str, query: Query) -> SearchPage:
        return await self._run(lambda conn: run_search(conn, store, query))

    async def stale_claims(self, older_than: float) -> list[Claim]:
        def select(conn: sqlite3.Connection) -> list[Claim]:
            rows = conn.execute(
                "SELECT store, sop_uid, blob_key, owner, claimed_at FROM claims"
                " WHERE claimed_at < ?",
                (older_than,),
            ).fetchall()
            return [
                Claim(store=r[0], sop_uid=r[1], blob_key=r[2], owner=r[3], claimed_at=r[4])
                for r in rows
            ]

        return await self._run(select)

    async def check(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1 FROM instances LIMIT 1").fetchall())

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await anyio.to_thread.run_sync(writer.close)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
