"""QIDO-RS parameters to Query: validation and normalisation, without HTTP."""

from __future__ import annotations

import pytest

from service.core.qido import parse_search
from service.core.search import Level, Match
from service.errors import MalformedRequest


def parse(*params: tuple[str, str], level: Level = Level.STUDY):  # type: ignore[no-untyped-def]
    return parse_search(list(params), level=level, default_limit=100, max_limit=1000)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("PatientID", "PAT1", Match("PatientID", "equal", ("PAT1",))),
        ("00100020", "PAT*", Match("PatientID", "wildcard", ("PAT*",))),
        ("PatientID", "A\\B", Match("PatientID", "any", ("A", "B"))),
        ("PatientName", "doe^jane^^", Match("PatientName", "equal", ("DOE^JANE",))),
        ("PatientName", "Doe*", Match("PatientName", "wildcard", ("DOE*",))),
        ("StudyDate", "20150101", Match("StudyDate", "equal", ("20150101",))),
        ("StudyDate", "20150101-20151231", Match("StudyDate", "range", ("20150101", "20151231"))),
        ("StudyDate", "-20151231", Match("StudyDate", "range", ("", "20151231"))),
        ("StudyDate", "20150101-", Match("StudyDate", "range", ("20150101", ""))),
        ("StudyTime", "1000-1200", Match("StudyTime", "range", ("100000.000000", "120059.999999"))),
        ("StudyTime", "10", Match("StudyTime", "range", ("100000.000000", "105959.999999"))),
        ("StudyTime", "101500.5", Match("StudyTime", "range", ("101500.500000", "101500.599999"))),
        ("StudyInstanceUID", "1.2,1.3", Match("StudyInstanceUID", "any", ("1.2", "1.3"))),
        ("StudyInstanceUID", "1.2\\1.3", Match("StudyInstanceUID", "any", ("1.2", "1.3"))),
        ("ModalitiesInStudy", "CT,MR", Match("ModalitiesInStudy", "any", ("CT", "MR"))),
    ],
)
def test_matches(key: str, value: str, match: Match) -> None:
    assert parse((key, value)).query.matches == (match,)


def test_fuzzy_names_become_words() -> None:
    search = parse(("PatientName", "doe jo"), ("fuzzymatching", "true"))
    assert search.query.matches == (Match("PatientName", "words", ("DOE", "JO")),)


def test_universal_match_only_returns_the_attribute() -> None:
    search = parse(("PatientID", ""))
    assert search.query.matches == ()
    assert "00100020" in search.include


def test_levels_and_ignored_keys() -> None:
    search = parse(("Modality", "CT"), ("ImageType", "ORIGINAL"))  # series key at study level
    assert search.query.matches == ()
    assert search.ignored == ("Modality", "ImageType")
    series = parse(("Modality", "CT"), ("PatientID", "P"), level=Level.SERIES)
    assert len(series.query.matches) == 2 and series.ignored == ()


def test_includefield_and_paging() -> None:
    search = parse(
        ("includefield", "00081030,Modality"),
        ("includefield", "all"),
        ("limit", "5000"),
        ("offset", "10"),
    )
    assert {"00081030", "00080060"} <= search.include and search.include_all
    assert (search.query.limit, search.query.offset) == (1000, 10)
    assert parse().query.limit == 100


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ([("Foo", "1")], "'Foo' is not a DICOM attribute"),
        ([("GGGGEEEE", "1")], "'GGGGEEEE' is not a DICOM attribute"),
        ([("includefield", "Nope")], "includefield 'Nope'"),
        ([("StudyDate", "not-a-date")], "not a date"),
        ([("StudyDate", "20151301")], "not a date"),
        ([("StudyDate", "2015-01-01")], "not a date"),
        ([("StudyDate", "-")], "at least one end"),
        ([("StudyTime", "25")], "not a time"),
        ([("StudyInstanceUID", "1.02")], "not a valid DICOM UID"),
        ([("SeriesNumber", "two")], "not an integer"),
        ([("limit", "abc")], "limit='abc' is not an integer"),
        ([("limit", "0")], "limit='0' must be at least 1"),
        ([("limit", "-1")], "must be at least 1"),
        ([("offset", "-5")], "offset='-5' must be at least 0"),
        ([("offset", "x")], "not an integer"),
        ([("fuzzymatching", "maybe")], "fuzzymatching"),
        ([("PatientID", "a"), ("00100020", "b")], "more than once"),
        ([("StudyDate", "2015*")], "not a date"),
        ([("PatientID", "A*\\B")], "wildcards need a single value"),
    ],
)
def test_bad_queries(params: list[tuple[str, str]], words: str) -> None:
    with pytest.raises(MalformedRequest, match=words.replace("(", r"\(").replace("*", r"\*")):
        parse(*params, level=Level.SERIES)
