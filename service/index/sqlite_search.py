"""QIDO-RS on SQLite: keeping the study and series rows current, and answering a
:class:`~service.core.search.Query` with one SQL statement per page."""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
import time
from typing import Any

import msgspec

from service.core.search import Level, Match, Query, SearchHit, SearchPage, time_bound
from service.index.base import InstanceRecord
from service.index.sqlite_schema import (
    INSTANCE_COLUMNS,
    NAME_ATTRIBUTES,
    NUMBER_KEYWORDS,
    SERIES_COLUMNS,
    STUDY_COLUMNS,
    TIME_KEYWORDS,
    name_rows,
    number,
)

__all__ = ["run_search", "upsert_levels"]

# -- writing -------------------------------------------------------------------------


def _level_row(
    columns: dict[str, str], attributes: dict[str, str], document: bytes
) -> dict[str, Any]:
    """A study or series row's values (its UID, the key, comes first in ``columns`` and
    is left out)."""
    row: dict[str, Any] = {}
    for keyword, column in list(columns.items())[1:]:
        raw = attributes.get(keyword)
        if keyword in TIME_KEYWORDS:
            row[column] = time_bound(raw.strip()) if raw else None
        elif keyword in NUMBER_KEYWORDS:
            row[column] = number(raw)
        else:
            row[column] = raw.strip() if raw else None
    row["document"] = document
    return row


_documents = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder().encode

#: Where each searchable person name sits in the study document.
_NAME_TAGS = {"PatientName": "00100010", "ReferringPhysicianName": "00080090"}
assert set(_NAME_TAGS) == set(NAME_ATTRIBUTES)


@dataclasses.dataclass(frozen=True)
class _Before:
    """What a study or series row held before an instance's write, if it existed."""

    #: The row's document as stored (encoded).
    stored: bytes
    modality: str | None = None

    @functools.cached_property
    def document(self) -> dict[str, Any]:
        """The stored document, decoded once: the merge and the name rows both read it
        when an instance brings a different document."""
        return _documents.decode(self.stored)


def _upsert(
    conn: sqlite3.Connection,
    table: str,
    keys: dict[str, str],
    row: dict[str, Any],
    added: int,
    now: int,
) -> _Before | None:
    """Write a study or series row: the instance's values merged into what the row held
    (an instance that lacks an attribute does not erase what another one gave), its
    instance count raised by ``added``, its revision advanced (see :func:`_bump`).
    One statement besides the read of the row: each statement is a round trip into
    SQLite that the writer thread makes while the other workers wait for the index."""
    select, upsert = _upsert_sql(table, tuple(keys), tuple(row))
    found = conn.execute(select, list(keys.values())).fetchone()
    before: _Before | None = None
    if found is not None:
        before = _Before(*found)
        # Most instances of a study or series repeat its values: then the merge would
        # give back the same document, and decoding both is the writer's largest cost.
        if before.stored != row["document"]:
            merged = dict(before.document)
            merged.update(_documents.decode(row["document"]))
            row["document"] = _encode({tag: merged[tag] for tag in sorted(merged)})
    conn.execute(upsert, [*keys.values(), *row.values(), added, now])
    return before


@functools.cache
def _upsert_sql(table: str, keys: tuple[str, ...], columns: tuple[str, ...]) -> tuple[str, str]:
    """The read and the upsert :func:`_upsert` runs on a table with these key and value
    columns (built once: a handful of shapes, written for every instance)."""
    where = " AND ".join(f"{k} = ?" for k in keys)
    extra = ", modality" if table == "series" else ""
    select = f"SELECT document{extra} FROM {table} WHERE {where}"
    names = [*keys, *columns, "instance_count", "revision"]
    updates = ", ".join(
        f"{c} = excluded.{c}" if c == "document" else f"{c} = coalesce(excluded.{c}, {c})"
        for c in columns
    )
    upsert = (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates},"
        " instance_count = instance_count + excluded.instance_count,"
        " revision = max(revision + 1, excluded.revision)"
    )
    return select, upsert


def _refresh_study(conn: sqlite3.Connection, store: str, study: str) -> None:
    modalities = sorted(
        m
        for (m,) in conn.execute(
            "SELECT DISTINCT modality FROM series WHERE store = ? AND study_uid = ?",
            (store, study),
        )
        if m
    )
    conn.execute(
        "UPDATE studies SET modalities = ?, series_count ="
        " (SELECT count(*) FROM series WHERE store = ? AND study_uid = ?)"
        " WHERE store = ? AND study_uid = ?",
        ("\\".join(modalities), store, study, store, study),
    )


def _now() -> int:
    return time.time_ns() // 1000


def _bump(conn: sqlite3.Connection, store: str, study: str, series: str) -> None:
    """Advance the study's and series' revisions. A revision is the commit time in
    microseconds, forced to grow: a study emptied and stored again later never gets a
    revision it had before, so documents cached under an old revision are never reused."""
    now = _now()
    conn.execute(
        "UPDATE series SET revision = max(revision + 1, ?)"
        " WHERE store = ? AND study_uid = ? AND series_uid = ?",
        (now, store, study, series),
    )
    conn.execute(
        "UPDATE studies SET revision = max(revision + 1, ?) WHERE store = ? AND study_uid = ?",
        (now, store, study),
    )


def _forget(conn: sqlite3.Connection, store: str, study: str, series: str) -> None:
    """An instance left (study, series): lower the counts, drop what became empty."""
    conn.execute(
        "UPDATE series SET instance_count = instance_count - 1"
        " WHERE store = ? AND study_uid = ? AND series_uid = ?",
        (store, study, series),
    )
    conn.execute(
        "DELETE FROM series WHERE store = ? AND study_uid = ? AND series_uid = ?"
        " AND instance_count <= 0",
        (store, study, series),
    )
    conn.execute(
        "UPDATE studies SET instance_count = instance_count - 1 WHERE store = ? AND study_uid = ?",
        (store, study),
    )
    gone = conn.execute(
        "DELETE FROM studies WHERE store = ? AND study_uid = ? AND instance_count <= 0",
        (store, study),
    ).rowcount
    if gone:
        conn.execute("DELETE FROM names WHERE store = ? AND study_uid = ?", (store, study))
    else:
        _refresh_study(conn, store, study)


def upsert_levels(
    conn: sqlite3.Connection, record: InstanceRecord, previous: tuple[str, str] | None
) -> None:
    """Bring the study, series and name rows up to date with a just-written instance
    (``previous``: the (study, series) the instance was in before, if it existed)."""
    store, study, series = record.store, record.study_uid, record.series_uid
    attributes = record.attributes
    moved = previous is not None and tuple(previous) != (study, series)
    added = 1 if previous is None or moved else 0
    now = _now()
    study_row = _level_row(STUDY_COLUMNS, attributes, record.study_document)
    study_before = _upsert(
        conn, "studies", {"store": store, "study_uid": study}, study_row, added, now
    )
    series_row = _level_row(SERIES_COLUMNS, attributes, record.series_document)
    series_keys = {"store": store, "study_uid": study, "series_uid": series}
    series_before = _upsert(conn, "series", series_keys, series_row, added, now)
    if moved and previous is not None:
        _forget(conn, store, previous[0], previous[1])
        _bump(conn, store, previous[0], previous[1])
    # The study's modalities and series count change only with a new series or a
    # series' new modality.
    modality = series_row["modality"]
    if series_before is None or (modality is not None and modality != series_before.modality):
        _refresh_study(conn, store, study)
    if study_before is not None and study_before.stored == record.study_document:
        return  # the same names as the document before: the rows are current (below)
    new_document = _documents.decode(record.study_document)
    before_document = study_before.document if study_before is not None else {}
    for keyword in NAME_ATTRIBUTES:
        value = attributes.get(keyword)
        if not value:
            continue  # an instance without the name keeps the one already known
        # The name rows always match the study document's name when it has one (both
        # are rewritten by each instance that has the name), so the same name in the
        # document before this instance means the rows are current.
        tag = _NAME_TAGS[keyword]
        before = before_document.get(tag)
        if before is not None and before == new_document.get(tag):
            continue
        conn.execute(
            "DELETE FROM names WHERE store = ? AND study_uid = ? AND attribute = ?",
            (store, study, keyword),
        )
        conn.executemany(
            "INSERT INTO names VALUES (?, ?, ?, ?, ?)",
            [(store, study, keyword, kind, text) for kind, text in name_rows(value)],
        )


# -- searching -----------------------------------------------------------------------


def _glob(pattern: str) -> str:
    """A DICOM wildcard pattern (``*``, ``?``) as a GLOB pattern."""
    return pattern.replace("[", "[[]")


def _prefix(pattern: str) -> str:
    """The literal part of a pattern before its first wildcard."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=len(pattern))
    return pattern[:cut]


def _compare(column: str, match: Match, params: list[Any]) -> str:
    kind, values = match.kind, match.values
    if kind in ("equal", "number"):
        params.append(int(values[0]) if kind == "number" else values[0])
        return f"{column} = ?"
    if kind == "any":
        params.extend(values)
        return f"{column} IN ({', '.join('?' * len(values))})"
    if kind == "wildcard":
        clauses = []
        prefix = _prefix(values[0])
        if prefix:  # a range the index can seek, before GLOB checks each candidate
            clauses.append(f"{column} >= ? AND {column} < ?")
            params.extend([prefix, prefix + "\U0010ffff"])
        clauses.append(f"{column} GLOB ?")
        params.append(_glob(values[0]))
        return " AND ".join(clauses)
    if kind == "range":
        low, high = values
        clauses = []
        if low:
            clauses.append(f"{column} >= ?")
            params.append(low)
        if high:
            clauses.append(f"{column} <= ?")
            params.append(high)
        return " AND ".join(clauses)
    raise ValueError(f"unsupported match kind {kind!r} for {match.keyword}")


def _name_condition(study: str, store: str, match: Match, params: list[Any]) -> str:
    if match.kind == "words":
        clauses = []
        for word in match.values:
            word_match = Match(match.keyword, "wildcard", (word + "*",))
            params.extend([store, match.keyword])
            condition = _compare("value", word_match, params)
            clauses.append(
                f"{study} IN (SELECT study_uid FROM names WHERE store = ? AND attribute = ?"
                f" AND kind = 'w' AND {condition})"
            )
        return " AND ".join(clauses)
    params.extend([store, match.keyword])
    condition = _compare("value", match, params)
    return (
        f"{study} IN (SELECT study_uid FROM names WHERE store = ? AND attribute = ?"
        f" AND kind = 'g' AND {condition})"
    )


_LEVEL_SQL = {
    Level.STUDY: (
        "FROM studies s",
        "s",
        "ORDER BY s.study_uid",
    ),
    Level.SERIES: (
        "FROM series se JOIN studies s ON s.store = se.store AND s.study_uid = se.study_uid",
        "se",
        "ORDER BY se.study_uid, se.series_number IS NULL, se.series_number, se.series_uid",
    ),
    Level.INSTANCE: (
        "FROM instances i"
        " JOIN series se ON se.store = i.store AND se.study_uid = i.study_uid"
        " AND se.series_uid = i.series_uid"
        " JOIN studies s ON s.store = i.store AND s.study_uid = i.study_uid",
        "i",
        "ORDER BY i.study_uid, i.series_uid, i.instance_number IS NULL, i.instance_number,"
        " i.sop_uid",
    ),
}


def _statement(store: str, query: Query) -> tuple[str, list[Any]]:
    source, driver, order = _LEVEL_SQL[query.level]
    where = [f"{driver}.store = ?"]
    params: list[Any] = [store]
    if query.study_uid is not None:
        where.append(f"{driver}.study_uid = ?")
        params.append(query.study_uid)
    if query.series_uid is not None:
        where.append(f"{driver}.series_uid = ?")
        params.append(query.series_uid)
    for match in query.matches:
        keyword = match.keyword
        if keyword in NAME_ATTRIBUTES:
            where.append(_name_condition("s.study_uid", store, match, params))
        elif keyword == "ModalitiesInStudy":
            params.append(store)
            condition = _compare("modality", match, params)
            where.append(
                f"s.study_uid IN (SELECT study_uid FROM series WHERE store = ? AND {condition})"
            )
        elif keyword in STUDY_COLUMNS:
            where.append(_compare(f"s.{STUDY_COLUMNS[keyword]}", match, params))
        elif keyword in SERIES_COLUMNS:
            where.append(_compare(f"se.{SERIES_COLUMNS[keyword]}", match, params))
        elif keyword in INSTANCE_COLUMNS:
            where.append(_compare(f"i.{INSTANCE_COLUMNS[keyword]}", match, params))
        else:
            raise ValueError(f"no column for {keyword}")
    columns = "s.study_uid, s.document, s.series_count, s.instance_count, s.modalities"
    if query.level >= Level.SERIES:
        columns += ", se.series_uid, se.document, se.instance_count"
    if query.level == Level.INSTANCE:
        columns += ", i.sop_uid, i.metadata"
    sql = f"SELECT {columns} {source} WHERE {' AND '.join(where)} {order} LIMIT ? OFFSET ?"
    params.extend([query.limit + 1, query.offset])
    return sql, params


def run_search(conn: sqlite3.Connection, store: str, query: Query) -> SearchPage:
    sql, params = _statement(store, query)
    rows = conn.execute(sql, params).fetchall()
    hits = []
    for row in rows[: query.limit]:
        hit: dict[str, Any] = {
            "study_uid": row[0],
            "study": bytes(row[1]),
            "study_series": row[2],
            "study_instances": row[3],
            "modalities": tuple(m for m in row[4].split("\\") if m),
        }
        if query.level >= Level.SERIES:
            hit.update(series_uid=row[5], series=bytes(row[6]), series_instances=row[7])
        if query.level == Level.INSTANCE:
            hit.update(sop_uid=row[8], instance=bytes(row[9]))
        hits.append(SearchHit(**hit))
    return SearchPage(hits=hits, more=len(rows) > query.limit)
