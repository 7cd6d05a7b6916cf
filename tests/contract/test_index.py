"""The Index contract: every backend must pass these."""

from __future__ import annotations

import asyncio
import time

import msgspec

from service.index.base import Index, InstanceRecord


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
