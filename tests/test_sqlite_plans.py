"""The SQLite index answers every QIDO-RS query shape through an index, from the very
first instance on: a fresh database is given planner statistics, because without them
SQLite chose to list a series' instances by scanning every instance of the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service.core.search import Level, Match, Query
from service.index.sqlite import SqliteIndex
from service.index.sqlite_search import _statement

QUERIES = [
    Query(level=Level.STUDY, limit=10),
    Query(level=Level.STUDY, matches=(Match("PatientID", "equal", ("P",)),), limit=10),
    Query(level=Level.STUDY, matches=(Match("AccessionNumber", "equal", ("A",)),), limit=10),
    Query(level=Level.STUDY, matches=(Match("StudyInstanceUID", "any", ("1.2",)),), limit=10),
    Query(level=Level.STUDY, matches=(Match("StudyDate", "range", ("2015", "2016")),), limit=10),
    Query(level=Level.STUDY, matches=(Match("PatientName", "wildcard", ("DOE*",)),), limit=10),
    Query(level=Level.STUDY, matches=(Match("PatientName", "words", ("JO",)),), limit=10),
    Query(level=Level.STUDY, matches=(Match("ModalitiesInStudy", "any", ("CT",)),), limit=10),
    Query(level=Level.SERIES, study_uid="1.2", limit=10),
    Query(level=Level.SERIES, matches=(Match("SeriesInstanceUID", "any", ("1.3",)),), limit=10),
    Query(level=Level.SERIES, matches=(Match("Modality", "equal", ("CT",)),), limit=10),
    Query(level=Level.INSTANCE, study_uid="1.2", limit=10),
    Query(level=Level.INSTANCE, study_uid="1.2", series_uid="1.3", limit=10),
    Query(level=Level.INSTANCE, matches=(Match("SOPInstanceUID", "any", ("1.4",)),), limit=10),
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.level.name}-{q.matches[:1]}")
async def test_no_full_scan(tmp_path: Path, query: Query) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite")
    await index.open()
    await index.close()
    conn = sqlite3.connect(tmp_path / "index.sqlite")
    sql, params = _statement("default", query)
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    conn.close()
    scans = [step for step in plan if step.startswith("SCAN")]
    assert not scans, plan
    # the instances table is only ever entered through a key, never by store alone
    assert not any(step == "SEARCH i USING PRIMARY KEY (store=?)" for step in plan), plan
