"""What is particular to the DynamoDB index, against a moto server over HTTP: item
sizes with huge metadata, the bounded scan and its Warning, concurrent writers, missing
tables, and the service end to end on DynamoDB."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import msgspec
import pytest

from service.config import load_settings
from service.core.search import Level, Match, Query
from service.errors import BackendUnavailable
from service.index.dynamodb import DynamoDBIndex, init_table, table_name
from service.index.sqlite import SqliteIndex
from service.storage.local import LocalBlobStore
from tests.aws import MotoServer, dynamodb_settings, unique_name
from tests.contract.conftest import dynamodb_index
from tests.contract.test_index_search import record
from tests.dicomgen import make_instance, new_uid
from tests.helpers import multipart, stow_headers
from tests.server import ServerProcess


@pytest.fixture
async def blobs(tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    return store


def _items(idx: DynamoDBIndex) -> list[dict[str, Any]]:
    client, items, kwargs = idx.table.client, [], {"TableName": idx.table.name}
    while True:
        page = client.scan(**kwargs)  # type: ignore[arg-type]
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]  # type: ignore[assignment]


def _item_size(item: dict[str, Any]) -> int:
    """An upper bound of DynamoDB's item size: names plus values, binary counted raw."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        size += len(value["B"]) if "B" in value else len(msgspec.json.encode(value))
    return size


async def test_huge_metadata_goes_to_blob_storage(moto: MotoServer, blobs: LocalBlobStore) -> None:
    idx = await dynamodb_index(moto, blobs)
    # 3 MB of incompressible text: far over DynamoDB's 400 KB item limit
    noise = os.urandom(1_500_000).hex()
    metadata = msgspec.json.encode({"00081030": {"vr": "LO", "Value": [noise]}})
    big = msgspec.structs.replace(record("7.1.1", "7.1", "7.1.9"), metadata=metadata)
    await idx.commit(big, "w")
    sizes = [_item_size(i) for i in _items(idx)]
    assert max(sizes) < 16 * 1024, sizes
    [(ref, document)] = await idx.metadata("default", "7.1")
    assert ref.sop_uid == "7.1.1" and document == metadata
    page = await idx.search("default", Query(level=Level.INSTANCE, study_uid="7.1", limit=5))
    assert [h.instance for h in page.hits] == [metadata]
    [stored] = list((blobs.root / "default" / "metadata").rglob("*.msgpack"))
    # replaced by a small document: back in the item, the old blob removed
    await idx.commit(record("7.1.1", "7.1", "7.1.9", sha="1"), "w")
    assert not stored.exists()
    [(_, small)] = await idx.metadata("default", "7.1")
    assert b"7.1.1" in small
    await idx.close()


async def test_small_metadata_stays_in_the_item(moto: MotoServer, blobs: LocalBlobStore) -> None:
    idx = await dynamodb_index(moto, blobs)
    await idx.commit(record("7.2.1", "7.2", "7.2.9"), "w")
    assert not (blobs.root / "default" / "metadata").exists()
    [instance] = [i for i in _items(idx) if i["SK"]["S"].startswith("INST#")]
    assert "md" in instance and "mdk" not in instance
    await idx.close()


async def _corpus(idx: Any) -> None:
    for n, name in enumerate(["DOE^JOHN", "ROE^JANE", "POE^JOHN", "DOE^ANNA"]):
        await idx.commit(
            record(f"8.{n}.1", f"8.{n}", f"8.{n}.9", PatientName=name, PatientID=f"P{n}"), "w"
        )


async def test_search_without_index_is_a_reported_bounded_scan(
    moto: MotoServer, blobs: LocalBlobStore, tmp_path: Path
) -> None:
    idx = await dynamodb_index(moto, blobs)
    sqlite = SqliteIndex(tmp_path / "index.sqlite")
    await sqlite.open()
    for index in (idx, sqlite):
        await _corpus(index)
    leading = Query(
        level=Level.STUDY, matches=(Match("PatientName", "wildcard", ("*JOHN",)),), limit=10
    )
    page = await idx.search("default", leading)
    assert [h.study_uid for h in page.hits] == ["8.0", "8.2"]
    assert "No index" in page.warning and "incomplete" not in page.warning
    sqlite_page = await sqlite.search("default", leading)
    assert [h.study_uid for h in sqlite_page.hits] == ["8.0", "8.2"] and sqlite_page.warning == ""
    # served by an index: no warning
    prefix = Query(
        level=Level.STUDY, matches=(Match("PatientName", "wildcard", ("DOE*",)),), limit=10
    )
    page = await idx.search("default", prefix)
    assert [h.study_uid for h in page.hits] == ["8.0", "8.3"] and page.warning == ""
    # a plain listing reads the store's studies in order: no warning either
    listing = await idx.search("default", Query(level=Level.STUDY, limit=2, offset=1))
    assert [h.study_uid for h in listing.hits] == ["8.1", "8.2"] and listing.more
    assert listing.warning == ""
    # series by UID across studies: served by by_series; by description: scanned
    by_uid = Query(
        level=Level.SERIES,
        matches=(Match("SeriesInstanceUID", "any", ("8.2.9", "8.0.9")),),
        limit=5,
    )
    page = await idx.search("default", by_uid)
    assert [h.series_uid for h in page.hits] == ["8.0.9", "8.2.9"] and page.warning == ""
    described = Query(
        level=Level.SERIES, matches=(Match("SeriesDescription", "equal", ("x",)),), limit=5
    )
    assert "No index" in (await idx.search("default", described)).warning
    await idx.close()
    await sqlite.close()


async def test_scan_limit_reached_says_results_may_be_incomplete(
    moto: MotoServer, blobs: LocalBlobStore
) -> None:
    idx = await dynamodb_index(moto, blobs, scan_limit=2)
    await _corpus(idx)
    leading = Query(
        level=Level.STUDY, matches=(Match("PatientName", "wildcard", ("*JOHN",)),), limit=10
    )
    page = await idx.search("default", leading)
    assert [h.study_uid for h in page.hits] == ["8.0"]  # only 8.0 and 8.1 were read
    assert "limit of 2 studies" in page.warning and "incomplete" in page.warning
    # paging a plain listing is not bounded: offset paging reaches every study
    listing = await idx.search("default", Query(level=Level.STUDY, limit=2, offset=3))
    assert [h.study_uid for h in listing.hits] == ["8.3"] and listing.warning == ""
    await idx.close()


async def test_very_long_names_are_indexed_and_found(
    moto: MotoServer, blobs: LocalBlobStore
) -> None:
    idx = await dynamodb_index(moto, blobs)
    long_name = "A" * 300 + "^" + "B" * 300
    await idx.commit(record("8.9.1", "8.9", "8.9.9", PatientName=long_name), "w")
    for match in (
        Match("PatientName", "equal", (long_name,)),
        Match("PatientName", "wildcard", ("A" * 250 + "*",)),
        Match("PatientName", "words", ("B" * 210,)),
    ):
        page = await idx.search("default", Query(level=Level.STUDY, matches=(match,), limit=5))
        assert [h.study_uid for h in page.hits] == ["8.9"] and page.warning == ""
    other = Match("PatientName", "equal", ("A" * 300 + "^C",))
    page = await idx.search("default", Query(level=Level.STUDY, matches=(other,), limit=5))
    assert page.hits == []
    await idx.close()


async def test_a_commit_that_lost_a_race_is_refused_and_retried(
    moto: MotoServer, blobs: LocalBlobStore
) -> None:
    # moto rolls a failed transaction back by restoring a copy of the whole table, which
    # loses concurrent writes, so the race is staged in order rather than run in threads:
    # a commit reads its items, another commit changes them, then the first one writes.
    idx = await dynamodb_index(moto, blobs)
    await idx.commit(record("9.1.0", "9.1", "9.1.0", Modality="CT"), "w")
    late = record("9.1.1", "9.1", "9.1.1", Modality="MR")
    stale, *_ = await anyio.to_thread.run_sync(idx._actions, late, "w", {}, None)
    await idx.commit(record("9.1.2", "9.1", "9.1.2", Modality="SR"), "w")
    assert not await anyio.to_thread.run_sync(idx.table.transact, stale)
    await idx.commit(late, "w")  # reads again: counts stay exact
    [study] = (await idx.search("default", Query(level=Level.STUDY, limit=5))).hits
    assert (study.study_series, study.study_instances) == (3, 3)
    assert study.modalities == ("CT", "MR", "SR")
    await idx.close()


async def test_missing_table_is_backend_unavailable_naming_it(
    moto: MotoServer, blobs: LocalBlobStore
) -> None:
    missing = unique_name("missing")
    idx = DynamoDBIndex(missing, blobs=blobs, endpoint_url=moto.endpoint)
    for call in (
        idx.check(),
        idx.find("default", "1.2"),
        idx.search("default", Query(level=Level.STUDY, limit=1)),
        idx.commit(record("1.2.3", "1.2", "1.2.9"), "w"),
    ):
        with pytest.raises(BackendUnavailable, match=f"table '{missing}' does not exist"):
            await call
    await idx.close()


@pytest.mark.parametrize("url", ["dynamodb://", "dynamodb://a/b", "dynamo://table", "dynamodb://x"])
def test_bad_table_urls(url: str) -> None:
    with pytest.raises(ValueError, match="dynamodb://table"):
        table_name(url)


def test_service_end_to_end_on_dynamodb(
    moto: MotoServer, start_server: Callable[..., ServerProcess]
) -> None:
    settings = dynamodb_settings(moto)
    server = start_server(**{k.removeprefix("DICOMWEB_").lower(): v for k, v in settings.items()})
    study, series = new_uid(), new_uid()
    parts = [
        make_instance(study=study, series=series, instance_number=n, patient_name="ROE^RICHARD")
        for n in (1, 2)
    ]
    with httpx.Client(base_url=server.root, timeout=60) as http:
        stored = http.post("/studies", content=multipart(*parts), headers=stow_headers())
        assert stored.status_code == 200, stored.text
        found = http.get("/studies", params={"PatientName": "roe*"})
        assert found.status_code == 200 and "Warning" not in found.headers
        [hit] = found.json()
        assert hit["0020000D"]["Value"] == [study] and hit["00201208"]["Value"] == [2]
        scanned = http.get("/studies", params={"PatientName": "*RICHARD"})
        assert [o["0020000D"]["Value"] for o in scanned.json()] == [[study]]
        assert "299" in scanned.headers["Warning"] and "No index" in scanned.headers["Warning"]
        metadata = http.get(f"/studies/{study}/series/{series}/metadata")
        assert metadata.status_code == 200
        assert sorted(o["00200013"]["Value"][0] for o in metadata.json()) == [1, 2]
        assert httpx.get(server.url + "/ready").status_code == 200


def test_ready_is_503_naming_a_missing_table(
    moto: MotoServer, start_server: Callable[..., ServerProcess]
) -> None:
    table = unique_name("missing")
    server = start_server(index=f"dynamodb://{table}", dynamodb_endpoint_url=moto.endpoint)
    ready = httpx.get(server.url + "/ready", timeout=30)
    assert ready.status_code == 503 and table in ready.json()["detail"]
    assert httpx.get(server.url + "/health").status_code == 200  # the service stays up
    search = httpx.get(server.root + "/studies", timeout=30)
    assert search.status_code == 503 and table in search.json()["detail"]


async def test_access_denied_is_backend_unavailable_naming_the_table(
    moto: MotoServer, tmp_path: Path, blobs: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second moto server that checks credentials (moto's IAM enforcement): the dummy
    # credentials belong to no user there, as a key without rights would on AWS.
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    strict = MotoServer(tmp_path / "moto-auth.log").start()
    try:
        idx = DynamoDBIndex("guarded", blobs=blobs, endpoint_url=strict.endpoint)
        with pytest.raises(
            BackendUnavailable, match="access to DynamoDB table 'guarded' was denied"
        ):
            await idx.check()
        await idx.close()
    finally:
        strict.stop()


async def test_start_up_clears_only_old_claims(
    moto: MotoServer, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    settings = dynamodb_settings(moto, dynamodb_stale_claim_seconds="3600")
    table = table_name(settings["DICOMWEB_INDEX"])
    idx = DynamoDBIndex(table, blobs=LocalBlobStore(tmp_path), endpoint_url=moto.endpoint)
    data = tmp_path / "data0"  # start_server's first data folder
    old_blob = data / "blobs" / "default" / "old.dcm"
    old_blob.parent.mkdir(parents=True)
    old_blob.write_bytes(b"left by a crash")
    assert await idx.claim("default", "1.2.1", "default/old.dcm", "crashed")
    # made two hours old, as if a replica had crashed then
    idx.table.client.update_item(
        TableName=table,
        Key={"PK": {"S": "default#SOP#1.2.1"}, "SK": {"S": "CLAIM"}},
        UpdateExpression="SET #at = :t",
        ExpressionAttributeNames={"#at": "at"},
        ExpressionAttributeValues={":t": {"N": str(time.time() - 7200)}},
    )
    assert await idx.claim("default", "1.2.2", "default/young.dcm", "live")
    start_server(**{k.removeprefix("DICOMWEB_").lower(): v for k, v in settings.items()})
    [left] = await idx.stale_claims(time.time() + 1)
    assert left.owner == "live" and not old_blob.exists()
    await idx.close()


async def test_layouts_inline_and_in_blob_storage(moto: MotoServer, blobs: LocalBlobStore) -> None:
    # Index.layouts (on main since this branch began) for both places a layout can be
    idx = await dynamodb_index(moto, blobs, inline_bytes=1024)
    layout = b'{"tag":2145386512,"frames":{"count":2,"frame_bytes":8}}'
    small = msgspec.structs.replace(record("6.1.1", "6.1", "6.1.9"), layout=layout)
    big = msgspec.structs.replace(
        record("6.1.2", "6.1", "6.1.9"),
        layout=layout,
        metadata=msgspec.json.encode({"00081030": {"vr": "LO", "Value": [os.urandom(4096).hex()]}}),
    )
    for rec in (small, big):
        await idx.commit(rec, "w")
    found = await idx.layouts("default", "6.1", "6.1.9")
    assert [(r.sop_uid, d) for r, d in found] == [("6.1.1", layout), ("6.1.2", layout)]
    assert list((blobs.root / "default" / "metadata").rglob("6.1.2.*"))
    await idx.close()


async def test_many_concurrent_writes_all_land(moto: MotoServer, blobs: LocalBlobStore) -> None:
    idx = await dynamodb_index(moto, blobs)
    records = [record(f"5.5.{i}", f"5.{i % 3}", f"5.{i % 3}.{i % 2}") for i in range(24)]

    async def store(rec: Any) -> None:
        assert await idx.claim(rec.store, rec.sop_uid, rec.blob_key, "w")
        await idx.commit(rec, "w")

    await asyncio.gather(*(store(r) for r in records))
    studies = (await idx.search("default", Query(level=Level.STUDY, limit=5))).hits
    assert [(s.study_uid, s.study_series, s.study_instances) for s in studies] == [
        ("5.0", 2, 8),
        ("5.1", 2, 8),
        ("5.2", 2, 8),
    ]
    assert await idx.stale_claims(time.time() + 1) == []
    await idx.close()


def test_init_table_creates_the_configured_table_once(moto: MotoServer) -> None:
    table = unique_name("index")
    settings = load_settings(
        {}, {"index": f"dynamodb://{table}", "dynamodb_endpoint_url": moto.endpoint}
    )
    said: list[str] = []
    assert init_table(settings, said.append) and init_table(settings, said.append)
    assert said == [f"table {table}: created", f"table {table}: exists"]
