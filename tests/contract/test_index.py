"""The Index contract: every backend must pass these."""

from __future__ import annotations

import asyncio
import time

import msgspec

from service.index.base import Claimed, Index, InstanceRecord, InstanceRef


def record(
    sop: str,
    *,
    study: str = "1.2.3",
    series: str = "1.2.3.4",
    number: int | None = None,
    store: str = "default",
    sha: str = "00",
    key: str | None = None,
) -> InstanceRecord:
    attributes = {"SOPInstanceUID": sop}
    if number is not None:
        attributes["InstanceNumber"] = str(number)
    return InstanceRecord(
        store=store,
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        blob_key=key or f"{store}/{sop}.dcm",
        size=10,
        sha256=sha,
        attributes=attributes,
        metadata=b'{"00080018":{"vr":"UI","Value":["' + sop.encode() + b'"]}}',
    )


async def test_claim_is_exclusive_until_released(index: Index) -> None:
    assert await index.claim("default", "1.1", "default/1.1.dcm", "a")
    assert not await index.claim("default", "1.1", "default/1.1.dcm", "b")
    await index.release("default", "1.1", "b")  # not b's claim: no effect
    assert not await index.claim("default", "1.1", "default/1.1.dcm", "b")
    await index.release("default", "1.1", "a")
    assert await index.claim("default", "1.1", "default/1.1.dcm", "b")


async def test_concurrent_claims_have_one_winner(index: Index) -> None:
    results = await asyncio.gather(
        *(index.claim("default", "9.9", "k", f"owner{i}") for i in range(10))
    )
    assert sum(results) == 1


async def test_commit_makes_instance_visible_and_drops_claim(index: Index) -> None:
    assert await index.find("default", "1.5") is None
    assert await index.claim("default", "1.5", "default/1.5.dcm", "a")
    await index.commit(record("1.5"), "a")
    found = await index.find("default", "1.5")
    assert found is not None and found.blob_key == "default/1.5.dcm"
    assert await index.claim("default", "1.5", "default/1.5.dcm", "b")  # claim was dropped


async def test_claim_instance_reports_what_is_stored(index: Index) -> None:
    seen: list[str | None] = []

    def key_for(existing: InstanceRef | None) -> str:
        seen.append(None if existing is None else existing.blob_key)
        return "default/1.6.new.dcm" if existing else "default/1.6.dcm"

    first = await index.claim_instance("default", "1.6", "a", key_for)
    assert first == Claimed(existing=None, blob_key="default/1.6.dcm")
    [claim] = await index.stale_claims(time.time() + 1)
    assert (claim.sop_uid, claim.blob_key, claim.owner) == ("1.6", "default/1.6.dcm", "a")
    # Held by a: another upload gets nothing and must wait.
    assert await index.claim_instance("default", "1.6", "b", key_for) is None
    await index.commit(record("1.6"), "a")
    second = await index.claim_instance("default", "1.6", "b", key_for)
    assert second is not None and second.blob_key == "default/1.6.new.dcm"
    assert second.existing is not None and second.existing.blob_key == "default/1.6.dcm"
    assert seen[0] is None and seen[-1] == "default/1.6.dcm"
    await index.release("default", "1.6", "b")
    assert await index.stale_claims(time.time() + 1) == []


async def test_concurrent_claim_instance_has_one_winner(index: Index) -> None:
    results = await asyncio.gather(
        *(index.claim_instance("default", "9.8", f"o{i}", lambda _: "k") for i in range(10))
    )
    assert sum(r is not None for r in results) == 1


async def test_commit_replaces_row(index: Index) -> None:
    await index.commit(record("2.1", sha="aa"), "x")
    await index.commit(record("2.1", sha="bb", key="default/2.1.b.dcm"), "y")
    found = await index.find("default", "2.1")
    assert found is not None and (found.sha256, found.blob_key) == ("bb", "default/2.1.b.dcm")
    assert len(await index.instances("default", "1.2.3")) == 1


async def test_instances_ordered_and_filtered(index: Index) -> None:
    for sop, series, number in [
        ("3.3", "5.2", 1),
        ("3.2", "5.1", 10),
        ("3.1", "5.1", 2),
        ("3.4", "5.1", None),
    ]:
        await index.commit(record(sop, study="7.7", series=series, number=number), "w")
    await index.commit(record("3.9", study="7.8"), "w")
    study = await index.instances("default", "7.7")
    assert [r.sop_uid for r in study] == ["3.1", "3.2", "3.4", "3.3"]
    assert [r.sop_uid for r in await index.instances("default", "7.7", "5.2")] == ["3.3"]
    one = await index.instances("default", "7.7", "5.1", "3.2")
    assert [r.sop_uid for r in one] == ["3.2"]
    assert await index.instances("default", "7.7", "5.2", "3.2") == []
    assert await index.instances("default", "0.0") == []


async def test_metadata_returns_documents(index: Index) -> None:
    await index.commit(record("4.1", study="8.8"), "w")
    [(ref, doc)] = await index.metadata("default", "8.8")
    assert ref.sop_uid == "4.1" and b'"4.1"' in doc


async def test_layouts_return_layout_documents(index: Index) -> None:
    layout = b'{"tag":2145386512,"frames":{"count":2,"frame_bytes":8}}'
    await index.commit(msgspec.structs.replace(record("4.2", study="8.9"), layout=layout), "w")
    await index.commit(record("4.3", study="8.9", series="5.9"), "w")
    assert [(r.sop_uid, d) for r, d in await index.layouts("default", "8.9", "1.2.3.4")] == [
        ("4.2", layout)
    ]
    assert [(r.sop_uid, d) for r, d in await index.layouts("default", "8.9", "5.9", "4.3")] == [
        ("4.3", b"")
    ]
    assert await index.layouts("default", "8.9", "5.9", "4.2") == []


async def test_stores_are_separate(index: Index) -> None:
    await index.commit(record("5.1", study="9.9", store="other"), "w")
    assert await index.find("default", "5.1") is None
    assert await index.instances("default", "9.9") == []
    assert [r.sop_uid for r in await index.instances("other", "9.9")] == ["5.1"]
    assert await index.claim("default", "5.1", "k", "a")


async def test_stale_claims(index: Index) -> None:
    assert await index.claim("default", "6.1", "default/6.1.dcm", "a")
    assert await index.stale_claims(time.time() - 60) == []
    [claim] = await index.stale_claims(time.time() + 1)
    assert (claim.sop_uid, claim.blob_key, claim.owner) == ("6.1", "default/6.1.dcm", "a")


async def test_check_passes_when_usable(index: Index) -> None:
    await index.check()


async def _store(index: Index, rec: InstanceRecord) -> None:
    assert await index.claim(rec.store, rec.sop_uid, rec.blob_key, "w")
    await index.commit(rec, "w")


async def test_revision_is_none_for_unknown_study_and_series(index: Index) -> None:
    assert await index.revision("default", "7.7") is None
    await _store(index, record("7.7.1", study="7.7", series="7.7.9"))
    assert await index.revision("default", "7.7", "7.7.8") is None
    assert await index.revision("other", "7.7") is None


async def test_revision_grows_with_each_store_in_its_study_and_series(index: Index) -> None:
    await _store(index, record("8.1", study="8", series="8.5"))
    await _store(index, record("8.2", study="8", series="8.6"))
    study0 = await index.revision("default", "8")
    series5 = await index.revision("default", "8", "8.5")
    series6 = await index.revision("default", "8", "8.6")
    assert study0 is not None and series5 is not None and series6 is not None
    await _store(index, record("8.3", study="8", series="8.5"))
    study1 = await index.revision("default", "8")
    assert study1 is not None and study1 > study0
    after5 = await index.revision("default", "8", "8.5")
    assert after5 is not None and after5 > series5
    assert await index.revision("default", "8", "8.6") == series6  # other series untouched
    # Replacing an instance in place is a change too.
    await _store(index, record("8.3", study="8", series="8.5", sha="ff", key="default/8.3.b"))
    study2 = await index.revision("default", "8")
    assert study2 is not None and study2 > study1


async def test_revision_of_a_study_an_instance_moved_out_of(index: Index) -> None:
    await _store(index, record("9.1", study="9", series="9.5"))
    await _store(index, record("9.2", study="9", series="9.5"))
    before = await index.revision("default", "9")
    await _store(index, record("9.2", study="10", series="10.5", sha="ee", key="default/9.2.b"))
    after = await index.revision("default", "9")
    assert before is not None and after is not None and after > before
    assert await index.revision("default", "10") is not None


async def test_many_concurrent_writes_all_land(index: Index) -> None:
    records = [record(f"5.5.{i}", study=f"5.{i % 3}", series=f"5.{i % 3}.1") for i in range(60)]

    async def store(rec: InstanceRecord) -> bool:
        if not await index.claim(rec.store, rec.sop_uid, rec.blob_key, "w"):
            return False
        await index.commit(rec, "w")
        return True

    results = await asyncio.gather(*(store(r) for r in records))
    assert all(results)
    for study in ("5.0", "5.1", "5.2"):
        assert len(await index.instances("default", study)) == 20
    assert await index.stale_claims(time.time() + 1) == []
