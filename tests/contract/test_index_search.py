"""The Index search contract: every backend answers the same Query the same way."""

from __future__ import annotations

import msgspec
import pytest

from service.core.search import Level, Match, Query
from service.index.base import Index, InstanceRecord

CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


def record(
    sop: str, study: str, series: str, *, store: str = "default", **attributes: str
) -> InstanceRecord:
    attrs = {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": sop}
    attrs.update(attributes)
    study_doc = {"0020000D": {"vr": "UI", "Value": [study]}}
    if "PatientID" in attrs:
        study_doc["00100020"] = {"vr": "LO", "Value": [attrs["PatientID"]]}
    # As ingest cuts it from the instance: the names are in the study document too.
    for tag, keyword in (("00100010", "PatientName"), ("00080090", "ReferringPhysicianName")):
        if attrs.get(keyword):
            study_doc[tag] = {"vr": "PN", "Value": [{"Alphabetic": attrs[keyword]}]}
    return InstanceRecord(
        store=store,
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=attrs.get("SOPClassUID", CT),
        transfer_syntax="1.2.840.10008.1.2.1",
        blob_key=f"{store}/{sop}.dcm",
        size=1,
        sha256="0",
        attributes=attrs,
        metadata=msgspec.json.encode({"00080018": {"vr": "UI", "Value": [sop]}}),
        study_document=msgspec.json.encode(study_doc),
        series_document=msgspec.json.encode({"0020000E": {"vr": "UI", "Value": [series]}}),
    )


@pytest.fixture
async def corpus(index: Index) -> Index:
    rows = [
        record(
            "1.1.1.1",
            "1.1",
            "1.1.1",
            PatientID="PAT1",
            PatientName="DOE^JOHN",
            StudyDate="20150310",
            StudyTime="101500",
            Modality="CT",
            SeriesNumber="1",
            InstanceNumber="2",
            AccessionNumber="ACC01",
        ),
        record(
            "1.1.1.2",
            "1.1",
            "1.1.1",
            PatientID="PAT1",
            PatientName="DOE^JOHN",
            StudyDate="20150310",
            StudyTime="101500",
            Modality="CT",
            SeriesNumber="1",
            InstanceNumber="1",
            AccessionNumber="ACC01",
        ),
        record(
            "1.1.2.1",
            "1.1",
            "1.1.2",
            PatientID="PAT1",
            # no PatientName and no StudyTime: the study keeps the ones known
            StudyDate="20150310",
            Modality="MR",
            SeriesNumber="2",
            InstanceNumber="1",
            SOPClassUID=MR,
            AccessionNumber="ACC01",
        ),
        record(
            "1.2.1.1",
            "1.2",
            "1.2.1",
            PatientID="PAT2",
            PatientName="Doe^Peter^^^",
            StudyDate="20161201",
            StudyTime="2359",
            Modality="US",
            AccessionNumber="ACC02",
        ),
        record(
            "1.3.1.1",
            "1.3",
            "1.3.1",
            PatientID="PAT3",
            PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう",
            StudyDate="20170101",
            Modality="CT",
            ReferringPhysicianName="SMITH^ANNA",
            AccessionNumber="ACC11",
        ),
        record("9.1.1.1", "9.1", "9.1.1", store="other", PatientID="PAT1", Modality="CT"),
    ]
    for r in rows:
        await index.commit(r, "w")
    return index


async def uids(index: Index, level: Level, *matches: Match, **scope: str | int) -> list[str]:
    limit = int(scope.pop("limit", 100))
    offset = int(scope.pop("offset", 0))
    query = Query(level=level, matches=matches, limit=limit, offset=offset, **scope)  # type: ignore[arg-type]
    page = await index.search("default", query)
    key = {Level.STUDY: "study_uid", Level.SERIES: "series_uid", Level.INSTANCE: "sop_uid"}[level]
    return [getattr(h, key) for h in page.hits]


async def test_study_level_and_counts(corpus: Index) -> None:
    page = await corpus.search("default", Query(level=Level.STUDY, limit=10))
    assert [h.study_uid for h in page.hits] == ["1.1", "1.2", "1.3"]
    first = page.hits[0]
    assert (first.study_series, first.study_instances, first.modalities) == (2, 3, ("CT", "MR"))
    assert b"PAT1" in first.study
    assert not page.more


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (Match("PatientID", "equal", ("PAT1",)), ["1.1"]),
        (Match("PatientID", "wildcard", ("PAT?",)), ["1.1", "1.2", "1.3"]),
        (Match("PatientID", "any", ("PAT2", "PAT3")), ["1.2", "1.3"]),
        (Match("AccessionNumber", "wildcard", ("ACC0*",)), ["1.1", "1.2"]),
        (Match("PatientName", "wildcard", ("DOE*",)), ["1.1", "1.2"]),
        (Match("PatientName", "equal", ("DOE^PETER",)), ["1.2"]),
        (Match("PatientName", "wildcard", ("*JOHN",)), ["1.1"]),
        (Match("PatientName", "equal", ("山田^太郎",)), ["1.3"]),
        (Match("PatientName", "wildcard", ("やまだ*",)), ["1.3"]),
        (Match("PatientName", "words", ("JO",)), ["1.1"]),
        (Match("PatientName", "words", ("DOE", "PE")), ["1.2"]),
        (Match("ReferringPhysicianName", "wildcard", ("SMI*",)), ["1.3"]),
        (Match("StudyDate", "range", ("20150101", "20161231")), ["1.1", "1.2"]),
        (Match("StudyDate", "range", ("20161201", "")), ["1.2", "1.3"]),
        (Match("StudyDate", "equal", ("20170101",)), ["1.3"]),
        (Match("StudyTime", "range", ("100000.000000", "120059.999999")), ["1.1"]),
        (Match("StudyTime", "range", ("235900.000000", "")), ["1.2"]),
        (Match("ModalitiesInStudy", "any", ("MR", "US")), ["1.1", "1.2"]),
        (Match("ModalitiesInStudy", "equal", ("CT",)), ["1.1", "1.3"]),
        (Match("StudyInstanceUID", "any", ("1.3", "1.1", "7.7")), ["1.1", "1.3"]),
    ],
)
async def test_study_matching(corpus: Index, match: Match, expected: list[str]) -> None:
    assert await uids(corpus, Level.STUDY, match) == expected


async def test_series_and_instance_levels(corpus: Index) -> None:
    assert await uids(corpus, Level.SERIES, study_uid="1.1") == ["1.1.1", "1.1.2"]
    assert await uids(corpus, Level.SERIES, Match("Modality", "equal", ("CT",))) == [
        "1.1.1",
        "1.3.1",
    ]
    assert await uids(corpus, Level.SERIES, Match("SeriesNumber", "number", ("2",))) == ["1.1.2"]
    assert await uids(corpus, Level.SERIES, Match("PatientID", "equal", ("PAT1",))) == [
        "1.1.1",
        "1.1.2",
    ]
    # instances ordered by series, then Instance Number
    assert await uids(corpus, Level.INSTANCE, study_uid="1.1") == ["1.1.1.2", "1.1.1.1", "1.1.2.1"]
    assert await uids(corpus, Level.INSTANCE, study_uid="1.1", series_uid="1.1.2") == ["1.1.2.1"]
    assert await uids(corpus, Level.INSTANCE, Match("SOPClassUID", "any", (MR,))) == ["1.1.2.1"]
    assert await uids(
        corpus, Level.INSTANCE, Match("InstanceNumber", "number", ("1",)), study_uid="1.1"
    ) == ["1.1.1.2", "1.1.2.1"]
    assert await uids(corpus, Level.INSTANCE, Match("Modality", "equal", ("US",))) == ["1.2.1.1"]
    page = await corpus.search("default", Query(level=Level.INSTANCE, limit=1, study_uid="1.2"))
    [hit] = page.hits
    assert (hit.series_instances, hit.study_instances) == (1, 1)
    assert hit.instance is not None and b"1.2.1.1" in hit.instance
    assert hit.series is not None and b"1.2.1" in hit.series


async def test_paging_is_stable_and_disjoint(corpus: Index) -> None:
    pages = [await uids(corpus, Level.INSTANCE, limit=2, offset=o) for o in (0, 2, 4, 6)]
    flat = [u for p in pages for u in p]
    assert flat == await uids(corpus, Level.INSTANCE, limit=100)
    assert len(flat) == len(set(flat)) == 5
    page = await corpus.search("default", Query(level=Level.INSTANCE, limit=2, offset=2))
    assert page.more
    page = await corpus.search("default", Query(level=Level.INSTANCE, limit=2, offset=3))
    assert not page.more


async def test_stores_are_separate(corpus: Index) -> None:
    assert await uids(corpus, Level.STUDY, Match("PatientID", "equal", ("PAT1",))) == ["1.1"]
    page = await corpus.search("other", Query(level=Level.STUDY, limit=10))
    assert [h.study_uid for h in page.hits] == ["9.1"]


async def test_counts_follow_replacement_and_moves(corpus: Index) -> None:
    # the same instance again: counts unchanged
    await corpus.commit(record("1.2.1.1", "1.2", "1.2.1", PatientID="PAT2", Modality="US"), "w")
    [study] = (await corpus.search("default", Query(level=Level.STUDY, limit=1, offset=1))).hits
    assert (study.study_uid, study.study_instances) == ("1.2", 1)
    # moved to another series of another study: the old study disappears
    await corpus.commit(record("1.2.1.1", "1.3", "1.3.9", PatientID="PAT3", Modality="SR"), "w")
    assert await uids(corpus, Level.STUDY) == ["1.1", "1.3"]
    [moved] = (await corpus.search("default", Query(level=Level.STUDY, limit=1, offset=1))).hits
    assert (moved.study_series, moved.study_instances, moved.modalities) == (2, 2, ("CT", "SR"))
    assert await uids(corpus, Level.STUDY, Match("PatientName", "wildcard", ("DOE^P*",))) == []


async def test_names_follow_the_latest_instance_that_has_them(index: Index) -> None:
    def named(sop: str, **names: str) -> InstanceRecord:
        return record(sop, "5.1", "5.1.1", PatientID="PAT5", Modality="CT", **names)

    def by(keyword: str, pattern: str) -> Match:
        return Match(keyword, "wildcard", (pattern,))

    await index.commit(named("5.1.1.1", PatientName="DOE^JOHN"), "w")
    await index.commit(named("5.1.1.2", PatientName="DOE^JOHN"), "w")  # the same name
    assert await uids(index, Level.STUDY, by("PatientName", "DOE^J*")) == ["5.1"]
    await index.commit(named("5.1.1.3", PatientName="ROE^JANE"), "w")  # corrected
    assert await uids(index, Level.STUDY, by("PatientName", "DOE^J*")) == []
    assert await uids(index, Level.STUDY, by("PatientName", "ROE^J*")) == ["5.1"]
    await index.commit(named("5.1.1.4"), "w")  # no name: the known one stays
    assert await uids(index, Level.STUDY, by("PatientName", "ROE^J*")) == ["5.1"]
    await index.commit(named("5.1.1.5", ReferringPhysicianName="HOUSE^GREG"), "w")
    assert await uids(index, Level.STUDY, by("ReferringPhysicianName", "HOUSE*")) == ["5.1"]
    assert await uids(index, Level.STUDY, by("PatientName", "ROE^J*")) == ["5.1"]


async def test_the_study_document_keeps_what_any_instance_gave(index: Index) -> None:
    """A study's document merges its instances' documents: one without the patient's
    name, stored after one with it, keeps the name; one that repeats the document
    exactly (the commonest case) changes nothing."""
    await index.commit(record("7.1.1.1", "7.1", "7.1.1", PatientName="DOE^JOHN"), "w")
    await index.commit(record("7.1.1.2", "7.1", "7.1.1", PatientID="PAT7"), "w")
    await index.commit(record("7.1.1.3", "7.1", "7.1.1", PatientID="PAT7"), "w")
    page = await index.search("default", Query(level=Level.STUDY, limit=10))
    [hit] = page.hits
    document = msgspec.json.decode(hit.study)
    assert document["00100010"]["Value"] == [{"Alphabetic": "DOE^JOHN"}]
    assert document["00100020"]["Value"] == ["PAT7"]
    assert list(document) == sorted(document)
    assert hit.study_instances == 3


async def test_a_series_given_another_modality_changes_the_study_modalities(
    index: Index,
) -> None:
    await index.commit(record("6.1.1.1", "6.1", "6.1.1", Modality="OT"), "w")
    await index.commit(record("6.1.2.1", "6.1", "6.1.2", Modality="CT"), "w")
    await index.commit(record("6.1.1.2", "6.1", "6.1.1", Modality="MR"), "w")  # corrected
    await index.commit(record("6.1.2.2", "6.1", "6.1.2"), "w")  # no modality: kept
    [study] = (await index.search("default", Query(level=Level.STUDY, limit=10))).hits
    assert (study.study_series, study.study_instances, study.modalities) == (2, 4, ("CT", "MR"))
    series = await uids(index, Level.SERIES, Match("Modality", "equal", ("OT",)))
    assert series == []
