"""QIDO-RS end to end (PS3.18 §10.6): a real server process, raw HTTP and dicomweb-client.

One dedicated server per module holds the corpus of ``tests.qido_data`` (7 generated
studies, 12 of pydicom's files), so expected sets of studies, series and instances are
exact. Expected answers are written out by hand as labels: ``s3`` is a study,
``s3.us`` a series, ``s3.us#2`` the instance with Instance Number 2 of that series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.aws import MotoServer, dynamodb_settings
from tests.dicomgen import encode, make_dataset, make_instance, new_uid
from tests.helpers import multipart, stow_headers
from tests.qido_data import FILES, SOP_CLASS, STUDIES, UNDATED, Corpus, build_corpus
from tests.server import ServerProcess

DICOM_JSON = "application/dicom+json"
Params = Sequence[tuple[str, str]]
Obj = dict[str, Any]

GENERATED = {s.label for s in STUDIES}
ALL_STUDIES = GENERATED | set(FILES)


@dataclass
class Env:
    server: ServerProcess
    client: httpx.Client
    corpus: Corpus

    def get(self, path: str, params: Params = (), **kw: Any) -> httpx.Response:
        return self.client.get(path, params=list(params), **kw)

    def search(self, path: str, params: Params = ()) -> list[Obj]:
        r = self.get(path, params)
        assert r.status_code == 200, (path, params, r.status_code, r.text)
        assert r.headers["content-type"].split(";")[0].strip() == DICOM_JSON
        body = r.json()
        assert isinstance(body, list)
        return body

    def studies(self, params: Params = (), path: str = "/studies") -> set[str]:
        labels = [self.corpus.study_label(uid_of(o, "0020000D")) for o in self.search(path, params)]
        assert len(labels) == len(set(labels)), f"duplicates in {labels}"
        return set(labels)

    def series(self, params: Params = (), path: str = "/series") -> set[str]:
        labels = [
            self.corpus.series_label(uid_of(o, "0020000E")) for o in self.search(path, params)
        ]
        assert len(labels) == len(set(labels)), f"duplicates in {labels}"
        return set(labels)

    def instances(self, params: Params = (), path: str = "/instances") -> set[str]:
        labels = [self.corpus.sop_label(uid_of(o, "00080018")) for o in self.search(path, params)]
        assert len(labels) == len(set(labels)), f"duplicates in {labels}"
        return set(labels)

    def one(self, path: str, params: Params, tag: str, uid: str) -> Obj:
        """The one result of ``path`` whose ``tag`` is ``uid``."""
        found = [o for o in self.search(path, params) if uid_of(o, tag) == uid]
        assert len(found) == 1, found
        return found[0]


def uid_of(obj: Obj, tag: str) -> str:
    [value] = obj[tag]["Value"]
    return str(value)


def values(obj: Obj, tag: str) -> list[Any] | None:
    found: list[Any] | None = obj.get(tag, {}).get("Value")
    return found


@pytest.fixture(scope="module", params=["sqlite", "dynamodb"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = {}
    if request.param == "dynamodb":  # the same answers from the DynamoDB index
        moto: MotoServer = request.getfixturevalue("moto")
        settings = dynamodb_settings(moto)
    server = ServerProcess(tmp_path_factory.mktemp("qido") / "data", settings).start()
    corpus = build_corpus()
    try:
        with httpx.Client(base_url=server.root, timeout=60) as client:
            r = client.post("/studies", content=multipart(*corpus.parts), headers=stow_headers())
            assert r.status_code == 200, r.text
            yield Env(server, client, corpus)
    finally:
        server.stop()


def is_range(params: Params) -> bool:
    return any(
        k in ("StudyDate", "StudyTime", "00080020", "00080030") and "-" in v for k, v in params
    )


# ------------------------------------------------------------------ study level

STUDY_MATCHES: list[tuple[Params, set[str]]] = [
    # single value, case-sensitive strings
    ([("PatientID", "PAT01")], {"s1"}),
    ([("00100020", "PAT01")], {"s1"}),
    ([("PatientID", "pat01")], {"s6"}),
    ([("PatientID", "PAT")], set()),
    ([("AccessionNumber", "ACC1")], {"s4"}),
    ([("AccessionNumber", "acc1")], set()),
    ([("StudyID", "S3")], {"s3"}),
    ([("StudyID", "s3")], set()),
    # wildcards on strings (case-sensitive)
    ([("PatientID", "PAT0*")], {"s1", "s2", "s3", "s5", "s7"}),
    ([("PatientID", "PAT0?")], {"s1", "s2", "s3", "s5", "s7"}),
    ([("PatientID", "pat*")], {"s6"}),
    ([("PatientID", "*01")], {"s1", "s6"}),
    ([("AccessionNumber", "ACC?1")], {"s1", "s2", "s3", "s6", "s7"}),
    ([("00080050", "*41")], {"s5"}),
    ([("00200010", "S?")], GENERATED),
    # person names: case-insensitive, trailing empty components ignored
    ([("PatientName", "DOE^JOHN")], {"s1"}),
    ([("PatientName", "doe^john")], {"s1"}),
    ([("PatientName", "DOE")], set()),
    ([("PatientName", "Doe*")], {"s1", "s2", "s3", "s7"}),
    ([("PatientName", "*JOHN")], {"s1"}),
    ([("PatientName", "*john*")], {"s1", "s7"}),
    ([("PatientName", "?OE^JOHN")], {"s1"}),
    ([("PatientName", "DOE^JOHN?")], set()),
    ([("PatientName", "DOE^JOHN??")], {"s7"}),
    ([("PatientName", "doe^jane")], {"s3"}),
    ([("PatientName", "DOE^JANE^^^")], {"s3"}),
    ([("PatientName", "Doe^Jane^^")], {"s3"}),
    ([("PatientName", "doe^peter")], {"s2"}),
    ([("PatientName", "müller^hans")], {"s4"}),
    ([("PatientName", "MÜLL*")], {"s4"}),
    ([("PatientName", "O'BRIEN^PAT")], {"s5"}),
    ([("PatientName", "o'b*")], {"s5"}),
    ([("00100010", "smith^anna")], {"s6"}),
    ([("PatientName", "compressedsamples^mr1")], {"MR_small.dcm"}),
    ([("PatientName", "CompressedSamples*")], {"CT_small.dcm", "MR_small.dcm"}),
    ([("ReferringPhysicianName", "welby^marcus")], {"s1", "s3"}),
    ([("ReferringPhysicianName", "HOUSE*")], {"s2"}),
    ([("00080090", "House^Gregory")], {"s2"}),
    # dates and times
    ([("StudyDate", "20151231")], {"s2"}),
    ([("StudyDate", "20150101-20151231")], {"s1", "s2", "s5", "s6"}),
    (
        [("StudyDate", "-20151231")],
        {"s1", "s2", "s4", "s5", "s6", "CT_small.dcm", "MR_small.dcm"}
        | {"chrJapMulti.dcm", "chrKoreanMulti.dcm"},
    ),
    ([("StudyDate", "20150101-")], {"s1", "s2", "s3", "s5", "s6", "s7"}),
    ([("00080020", "20040101-20041231")], {"CT_small.dcm", "MR_small.dcm"}),
    ([("StudyTime", "1000-1200")], {"s1", "s2"}),
    ([("StudyTime", "101500")], {"s1"}),
    ([("StudyTime", "-0900")], {"s3", "s5", "CT_small.dcm"}),
    ([("StudyTime", "2300-")], {"s4"}),
    ([("StudyDate", "20150101-20151231"), ("StudyTime", "1000-1200")], {"s1", "s2"}),
    # modalities in study
    ([("ModalitiesInStudy", "MR")], {"s2", "s3", "s4", "s7", "MR_small.dcm"}),
    ([("ModalitiesInStudy", "SR")], {"s1"}),
    ([("ModalitiesInStudy", "US")], {"s3", "s5"}),
    (
        [("ModalitiesInStudy", "CT,MR")],
        {"s1", "s2", "s3", "s4", "s6", "s7", "CT_small.dcm", "MR_small.dcm"},
    ),
    ([("ModalitiesInStudy", "US\\SR")], {"s1", "s3", "s5"}),
    ([("00080061", "CR")], {"chrJapMulti.dcm", "chrKoreanMulti.dcm"}),
    ([("ModalitiesInStudy", "OT")], set(UNDATED)),
    # combinations
    ([("PatientName", "DOE*"), ("ModalitiesInStudy", "CT")], {"s1", "s3", "s7"}),
    ([("PatientID", "PAT0*"), ("StudyDate", "-20151231")], {"s1", "s2", "s5"}),
    # universal matching
    ([("PatientID", "")], ALL_STUDIES),
    ([("PatientName", ""), ("AccessionNumber", "ACC1")], {"s4"}),
    ([], ALL_STUDIES),
]


@pytest.mark.parametrize(("params", "expected"), STUDY_MATCHES, ids=str)
def test_study_matching(env: Env, params: Params, expected: set[str]) -> None:
    got = env.studies(params)
    if is_range(params):  # an empty stored date/time may or may not be in a range
        got -= UNDATED
    assert got == expected


def test_universal_match_returns_the_attribute(env: Env) -> None:
    for obj in env.search("/studies", [("PatientID", "")]):
        assert "00100020" in obj


def test_study_uid_lists(env: Env) -> None:
    uid = env.corpus.study_uid
    assert env.studies([("StudyInstanceUID", uid["s1"])]) == {"s1"}
    assert env.studies([("StudyInstanceUID", f"{uid['s1']},{uid['s4']}")]) == {"s1", "s4"}
    assert env.studies([("0020000D", f"{uid['s4']}\\{uid['chrH31.dcm']}")]) == {
        "s4",
        "chrH31.dcm",
    }
    assert env.studies([("StudyInstanceUID", new_uid())]) == set()
    assert env.studies([("StudyInstanceUID", f"{uid['s2']},{new_uid()}")]) == {"s2"}


FUZZY: list[tuple[Params, set[str]]] = [
    ([("PatientName", "jo"), ("fuzzymatching", "true")], {"s1", "s7"}),
    ([("PatientName", "doe jo"), ("fuzzymatching", "true")], {"s1", "s7"}),
    ([("PatientName", "doe^jo"), ("fuzzymatching", "true")], {"s1", "s7"}),
    ([("PatientName", "johnny"), ("fuzzymatching", "true")], {"s7"}),
    ([("PatientName", "pe doe"), ("fuzzymatching", "true")], {"s2"}),
    ([("PatientName", "an smi"), ("fuzzymatching", "true")], {"s6"}),
    ([("PatientName", "jo smith"), ("fuzzymatching", "true")], set()),
    ([("PatientName", "DOE"), ("fuzzymatching", "true")], {"s1", "s2", "s3", "s7"}),
    ([("PatientName", "rü äne"), ("fuzzymatching", "true")], {"chrGerm.dcm"}),
    ([("ReferringPhysicianName", "marc"), ("fuzzymatching", "true")], {"s1", "s3"}),
    ([("PatientName", "jo")], set()),
    ([("PatientName", "jo"), ("fuzzymatching", "false")], set()),
    ([("PatientName", "doe jo")], set()),
]


@pytest.mark.parametrize(("params", "expected"), FUZZY, ids=str)
def test_fuzzy_matching(env: Env, params: Params, expected: set[str]) -> None:
    assert env.studies(params) == expected


def test_fuzzy_matching_at_series_level(env: Env) -> None:
    params = [("PatientName", "jo"), ("fuzzymatching", "true")]
    assert env.series(params) == {"s1.ct", "s1.sr", "s7.mr", "s7.ct"}


CHARSET_MATCHES = [
    ("山田^太郎", {"chrH31.dcm"}),  # Ideographic group
    ("やまだ^たろう", {"chrH31.dcm", "chrJapMulti.dcm"}),  # Phonetic / Alphabetic
    ("yamada^tarou", {"chrH31.dcm"}),
    ("山田*", {"chrH31.dcm"}),
    ("王^小東", {"chrX1.dcm"}),
    ("wang^xiaodong", {"chrX1.dcm"}),
    ("洪^吉洞", {"chrI2.dcm"}),
    ("홍^길동", {"chrI2.dcm"}),
    ("김희중", {"chrKoreanMulti.dcm"}),
    ("διον*", {"chrGreek.dcm"}),
    ("ΔΙΟΝ*", {"chrGreek.dcm"}),
    ("ΔΙΟΝΥΣΙΟΣ", {"chrGreek.dcm"}),  # final sigma: case-insensitive, not lower()
    ("люк*", {"chrRuss.dcm"}),
    ("ЛЮК*", {"chrRuss.dcm"}),
    ("قباني^لنزار", {"chrArab.dcm"}),
    ("قباني*", {"chrArab.dcm"}),
    ("äneas^rüdiger", {"chrGerm.dcm"}),
    ("ÄNEAS*", {"chrGerm.dcm"}),
    ("?neas^rüdiger", {"chrGerm.dcm"}),  # ? is one character, not one byte
    ("buc^jérôme", {"chrFren.dcm"}),
    ("BUC^JÉRÔME", {"chrFren.dcm"}),
    ("*RÔME", {"chrFren.dcm"}),
]


@pytest.mark.parametrize(("name", "expected"), CHARSET_MATCHES)
def test_charset_name_matching(env: Env, name: str, expected: set[str]) -> None:
    assert env.studies([("PatientName", name)]) == expected


@pytest.mark.parametrize(
    "name", [f for f in FILES if f.startswith("chr")] + ["CT_small.dcm", "MR_small.dcm"]
)
def test_returned_names_are_decoded(env: Env, name: str) -> None:
    uid = env.corpus.study_uid[name]
    obj = env.one("/studies", [("StudyInstanceUID", uid)], "0020000D", uid)
    pn = env.corpus.datasets[name].PatientName
    groups = {"Alphabetic": pn.alphabetic, "Ideographic": pn.ideographic, "Phonetic": pn.phonetic}
    expected = {k: v for k, v in groups.items() if v}
    assert obj["00100010"]["vr"] == "PN"
    assert obj["00100010"]["Value"] == [expected]
    if "SpecificCharacterSet" in env.corpus.datasets[name]:  # MR_small.dcm has none
        assert "00080005" in obj


def test_study_default_attributes(env: Env) -> None:
    uid = env.corpus.study_uid["s1"]
    obj = env.one("/studies", [("PatientID", "PAT01")], "0020000D", uid)
    expected = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080020": {"vr": "DA", "Value": ["20150315"]},
        "00080030": {"vr": "TM", "Value": ["101500"]},
        "00080050": {"vr": "SH", "Value": ["ACC11"]},
        "00080056": {"vr": "CS", "Value": ["ONLINE"]},
        "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
        "00080090": {"vr": "PN", "Value": [{"Alphabetic": "WELBY^MARCUS"}]},
        "00081190": {"vr": "UR", "Value": [f"{env.server.root}/studies/{uid}"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]},
        "00100020": {"vr": "LO", "Value": ["PAT01"]},
        "00100030": {"vr": "DA", "Value": ["19700101"]},
        "00100040": {"vr": "CS", "Value": ["M"]},
        "0020000D": {"vr": "UI", "Value": [uid]},
        "00200010": {"vr": "SH", "Value": ["S1"]},
        "00201206": {"vr": "IS", "Value": [2]},
        "00201208": {"vr": "IS", "Value": [4]},
    }
    assert {tag: obj.get(tag) for tag in expected} == expected
    assert "Value" not in obj.get("00081030", {})  # StudyDescription only on request
    assert all(len(tag) == 8 and tag == tag.upper() for tag in obj)


@pytest.mark.parametrize("label", sorted(ALL_STUDIES))
def test_study_counts_and_modalities(env: Env, label: str) -> None:
    uid = env.corpus.study_uid[label]
    obj = env.one("/studies", [("StudyInstanceUID", uid)], "0020000D", uid)
    if label in GENERATED:
        spec = env.corpus.spec(label)
        n_series = len(spec.series)
        n_instances = sum(len(s.instances) for s in spec.series)
        modalities = sorted({s.modality for s in spec.series})
    else:
        n_series, n_instances = 1, 1
        modalities = [env.corpus.datasets[label].Modality]
    assert values(obj, "00201206") == [n_series]
    assert values(obj, "00201208") == [n_instances]
    assert values(obj, "00080061") == modalities
    assert values(obj, "00081190") == [f"{env.server.root}/studies/{uid}"]


def test_modalities_in_study_returns_all_modalities(env: Env) -> None:
    uid = env.corpus.study_uid["s3"]
    obj = env.one("/studies", [("ModalitiesInStudy", "MR")], "0020000D", uid)
    assert values(obj, "00080061") == ["CT", "MR", "US"]


# ------------------------------------------------------------------ series level

SERIES_MATCHES: list[tuple[Params, set[str] | None]] = [
    ([("Modality", "US")], {"s3.us", "s5.us"}),
    ([("00080060", "SR")], {"s1.sr"}),
    ([("Modality", "us")], set()),
    ([("Modality", "US,SR")], {"s1.sr", "s3.us", "s5.us"}),
    ([("Modality", "US\\SR")], {"s1.sr", "s3.us", "s5.us"}),
    ([("SeriesNumber", "2")], {"s1.sr", "s2.mr2", "s3.mr"}),
    ([("00200011", "5")], {"s4.mr"}),
    ([("SeriesNumber", "1"), ("Modality", "CT")], {"s1.ct", "s3.ct", "s6.ct", "CT_small.dcm"}),
    ([("PerformedProcedureStepStartDate", "20150301-20150331")], {"s1.ct"}),
    ([("PerformedProcedureStepStartTime", "1200-1210")], {"s2.mr2"}),
    # study-level keys at /series
    ([("Modality", "CT"), ("PatientName", "doe*")], {"s1.ct", "s3.ct", "s7.ct"}),
    ([("StudyDate", "20150101-20150630")], {"s1.ct", "s1.sr", "s5.us", "s6.ct"}),
    ([("PatientID", "PAT03")], {"s3.ct", "s3.mr", "s3.us"}),
    ([("AccessionNumber", "ACC?1"), ("Modality", "MR")], {"s2.mr1", "s2.mr2", "s3.mr", "s7.mr"}),
    ([("Modality", "CR")], {"chrJapMulti.dcm", "chrKoreanMulti.dcm"}),
    ([("PatientName", "山田^太郎")], {"chrH31.dcm"}),
    ([("Modality", "")], None),  # universal: everything
]


@pytest.mark.parametrize(("params", "expected"), SERIES_MATCHES, ids=str)
def test_series_matching(env: Env, params: Params, expected: set[str] | None) -> None:
    got = env.series(params)
    if is_range(params):
        got -= UNDATED
    assert got == (env.corpus.all_series if expected is None else expected)


def test_series_of_a_study(env: Env) -> None:
    s3, s1 = env.corpus.study_uid["s3"], env.corpus.study_uid["s1"]
    path = f"/studies/{s3}/series"
    assert env.series(path=path) == {"s3.ct", "s3.mr", "s3.us"}
    assert env.series([("Modality", "MR")], path) == {"s3.mr"}
    assert env.series([("Modality", "MR,US")], path) == {"s3.mr", "s3.us"}
    assert env.series([("SeriesNumber", "3")], path) == {"s3.us"}
    assert env.series([("Modality", "MR")], f"/studies/{s1}/series") == set()
    other = env.corpus.series_uid
    assert env.series([("SeriesInstanceUID", f"{other['s3.us']},{other['s1.ct']}")], path) == {
        "s3.us"
    }
    for obj in env.search(path):
        assert values(obj, "0020000D") == [s3]


def test_series_uid_lists(env: Env) -> None:
    se = env.corpus.series_uid
    assert env.series([("SeriesInstanceUID", f"{se['s2.mr1']}\\{se['s6.ct']}")]) == {
        "s2.mr1",
        "s6.ct",
    }
    assert env.series([("StudyInstanceUID", env.corpus.study_uid["s2"])]) == {"s2.mr1", "s2.mr2"}
    assert env.series([("SeriesInstanceUID", new_uid())]) == set()


SERIES_DEFAULTS = {
    "00080005",
    "00080060",
    "0008103E",
    "00081190",
    "0020000E",
    "00200011",
    "00201209",
    "0020000D",
}


def test_series_default_attributes(env: Env) -> None:
    study, series = env.corpus.study_uid["s1"], env.corpus.series_uid["s1.ct"]
    obj = env.one(f"/studies/{study}/series", [], "0020000E", series)
    expected = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "0008103E": {"vr": "LO", "Value": ["Axial"]},
        "00081190": {"vr": "UR", "Value": [f"{env.server.root}/studies/{study}/series/{series}"]},
        "0020000E": {"vr": "UI", "Value": [series]},
        "00200011": {"vr": "IS", "Value": [1]},
        "00201209": {"vr": "IS", "Value": [3]},
        "00400244": {"vr": "DA", "Value": ["20150315"]},
        "00400245": {"vr": "TM", "Value": ["101600"]},
        "0020000D": {"vr": "UI", "Value": [study]},
    }
    assert {tag: obj.get(tag) for tag in expected} == expected


def test_series_counts(env: Env) -> None:
    for spec in STUDIES:
        for se in spec.series:
            uid = env.corpus.series_uid[se.label]
            obj = env.one("/series", [("SeriesInstanceUID", uid)], "0020000E", uid)
            assert values(obj, "00201209") == [len(se.instances)], se.label
            assert values(obj, "00200011") == [se.number]
            assert values(obj, "00080060") == [se.modality]


def test_all_series_also_return_study_attributes(env: Env) -> None:
    study, series = env.corpus.study_uid["s1"], env.corpus.series_uid["s1.ct"]
    obj = env.one("/series", [("Modality", "CT")], "0020000E", series)
    assert obj.keys() >= SERIES_DEFAULTS
    assert values(obj, "00081190") == [f"{env.server.root}/studies/{study}/series/{series}"]
    assert values(obj, "00100010") == [{"Alphabetic": "DOE^JOHN"}]
    assert values(obj, "00100020") == ["PAT01"]
    assert values(obj, "00100030") == ["19700101"]
    assert values(obj, "00100040") == ["M"]
    assert values(obj, "00080020") == ["20150315"]
    assert values(obj, "00080030") == ["101500"]
    assert values(obj, "00080050") == ["ACC11"]
    assert values(obj, "00080090") == [{"Alphabetic": "WELBY^MARCUS"}]
    assert values(obj, "00200010") == ["S1"]
    assert values(obj, "00080061") == ["CT", "SR"]
    assert values(obj, "00201206") == [2]
    assert values(obj, "00201208") == [4]


# ------------------------------------------------------------------ instance level

MR_INSTANCES = {"s2.mr1#1", "s2.mr1#2", "s2.mr2#3", "s2.mr2#4", "s3.mr#1", "s7.mr#2"}
MR_INSTANCES |= {f"s4.mr#{n}" for n in (1, 2, 3, 4)} | {"MR_small.dcm#1"}

INSTANCE_MATCHES: list[tuple[Params, set[str] | None]] = [
    ([("SOPClassUID", SOP_CLASS["MR"])], MR_INSTANCES),
    ([("00080016", SOP_CLASS["US"])], {"s3.us#1", "s3.us#2", "s5.us#1"}),
    ([("SOPClassUID", SOP_CLASS["SR"])], {"s1.sr#1"}),
    ([("SOPClassUID", f"{SOP_CLASS['SR']},{SOP_CLASS['US']}")], {"s1.sr#1", "s3.us#1"}
     | {"s3.us#2", "s5.us#1"}),
    ([("InstanceNumber", "3")], {"s1.ct#3", "s2.mr2#3", "s4.mr#3"}),
    ([("00200013", "4")], {"s2.mr2#4", "s4.mr#4"}),
    # series and study keys at /instances
    ([("Modality", "MR"), ("PatientID", "PAT02")], {"s2.mr1#1", "s2.mr1#2", "s2.mr2#3"}
     | {"s2.mr2#4"}),
    ([("StudyDate", "20151231"), ("SeriesNumber", "2")], {"s2.mr2#3", "s2.mr2#4"}),
    ([("PatientName", "*anna"), ("InstanceNumber", "2")], {"s6.ct#2"}),
    ([("ModalitiesInStudy", "SR"), ("Modality", "CT")], {"s1.ct#1", "s1.ct#2", "s1.ct#3"}),
    ([("AccessionNumber", "ACC1"), ("InstanceNumber", "")], {f"s4.mr#{n}" for n in (1, 2, 3, 4)}),
    ([("SOPClassUID", "")], None),
]  # fmt: skip


@pytest.mark.parametrize(("params", "expected"), INSTANCE_MATCHES, ids=str)
def test_instance_matching(env: Env, params: Params, expected: set[str] | None) -> None:
    assert env.instances(params) == (env.corpus.all_instances if expected is None else expected)


def test_instances_of_a_study_and_series(env: Env) -> None:
    s3, s1 = env.corpus.study_uid["s3"], env.corpus.study_uid["s1"]
    path = f"/studies/{s3}/instances"
    assert env.instances(path=path) == {"s3.ct#1", "s3.mr#1", "s3.us#1", "s3.us#2"}
    assert env.instances([("Modality", "US")], path) == {"s3.us#1", "s3.us#2"}
    assert env.instances([("SeriesNumber", "2")], path) == {"s3.mr#1"}
    assert env.instances([("InstanceNumber", "2")], path) == {"s3.us#2"}
    ct = env.corpus.series_uid["s1.ct"]
    path = f"/studies/{s1}/series/{ct}/instances"
    assert env.instances(path=path) == {"s1.ct#1", "s1.ct#2", "s1.ct#3"}
    assert env.instances([("InstanceNumber", "2")], path) == {"s1.ct#2"}
    assert env.instances([("SOPClassUID", SOP_CLASS["MR"])], path) == set()
    # a series of another study is not found through this study
    assert env.instances(path=f"/studies/{s3}/series/{ct}/instances") == set()


def test_instance_uid_lists(env: Env) -> None:
    a, b = env.corpus.instance("s1.ct#1"), env.corpus.instance("s5.us#1")
    assert env.instances([("SOPInstanceUID", f"{a.sop_uid},{b.sop_uid}")]) == {
        "s1.ct#1",
        "s5.us#1",
    }
    assert env.instances([("00080018", f"{a.sop_uid}\\{new_uid()}")]) == {"s1.ct#1"}
    assert env.instances([("SeriesInstanceUID", env.corpus.series_uid["s6.ct"])]) == {
        "s6.ct#1",
        "s6.ct#2",
    }


def test_instance_default_attributes(env: Env) -> None:
    study, series = env.corpus.study_uid["s4"], env.corpus.series_uid["s4.mr"]
    inst = env.corpus.instance("s4.mr#4")
    path = f"/studies/{study}/series/{series}/instances"
    obj = env.one(path, [], "00080018", inst.sop_uid)
    expected = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080016": {"vr": "UI", "Value": [SOP_CLASS["MR"]]},
        "00080018": {"vr": "UI", "Value": [inst.sop_uid]},
        "00080056": {"vr": "CS", "Value": ["ONLINE"]},
        "00081190": {
            "vr": "UR",
            "Value": [f"{env.server.root}{path}/{inst.sop_uid}"],
        },
        "00200013": {"vr": "IS", "Value": [4]},
        "00280010": {"vr": "US", "Value": [4]},
        "00280011": {"vr": "US", "Value": [4]},
        "00280100": {"vr": "US", "Value": [16]},
        "00280008": {"vr": "IS", "Value": [2]},
        "0020000D": {"vr": "UI", "Value": [study]},
        "0020000E": {"vr": "UI", "Value": [series]},
    }
    assert {tag: obj.get(tag) for tag in expected} == expected


def test_instance_without_image_attributes(env: Env) -> None:
    inst = env.corpus.instance("s1.sr#1")
    obj = env.one("/instances", [("SOPClassUID", SOP_CLASS["SR"])], "00080018", inst.sop_uid)
    for tag in ("00280010", "00280011", "00280100", "00280008"):
        assert "Value" not in obj.get(tag, {}), tag


def test_instances_of_a_study_return_series_attributes(env: Env) -> None:
    study = env.corpus.study_uid["s3"]
    inst = env.corpus.instance("s3.us#2")
    obj = env.one(f"/studies/{study}/instances", [], "00080018", inst.sop_uid)
    assert values(obj, "00080060") == ["US"]
    assert values(obj, "00200011") == [3]
    assert values(obj, "0008103E") == ["Doppler"]
    assert values(obj, "00201209") == [2]
    assert values(obj, "0020000E") == [env.corpus.series_uid["s3.us"]]
    assert values(obj, "00200013") == [2]
    series = env.corpus.series_uid["s3.us"]
    assert values(obj, "00081190") == [
        f"{env.server.root}/studies/{study}/series/{series}/instances/{inst.sop_uid}"
    ]


def test_all_instances_return_study_and_series_attributes(env: Env) -> None:
    inst = env.corpus.instance("s2.mr2#3")
    obj = env.one("/instances", [("PatientID", "PAT02")], "00080018", inst.sop_uid)
    assert values(obj, "00100020") == ["PAT02"]
    assert values(obj, "00100010") == [{"Alphabetic": "Doe^Peter"}]
    assert values(obj, "00080020") == ["20151231"]
    assert values(obj, "00080050") == ["ACC21"]
    assert values(obj, "00200010") == ["S2"]
    assert values(obj, "00201206") == [2]
    assert values(obj, "00201208") == [4]
    assert values(obj, "00080061") == ["MR"]
    assert values(obj, "00080060") == ["MR"]
    assert values(obj, "00200011") == [2]
    assert values(obj, "00201209") == [2]
    assert values(obj, "00400244") == ["20151231"]
    assert values(obj, "00200013") == [3]
    assert values(obj, "00080016") == [SOP_CLASS["MR"]]


# ------------------------------------------------------------------ includefield


@pytest.mark.parametrize(
    "params",
    [
        [("includefield", "StudyDescription")],
        [("includefield", "00081030")],
        [("includefield", "00081030,PatientID")],
        [("includefield", "00100030"), ("includefield", "StudyDescription")],
        [("includefield", "all")],
    ],
    ids=str,
)
def test_includefield_study_description(env: Env, params: Params) -> None:
    uid = env.corpus.study_uid["s1"]
    obj = env.one("/studies", [("PatientID", "PAT01"), *params], "0020000D", uid)
    assert obj["00081030"] == {"vr": "LO", "Value": ["Chest CT"]}
    assert values(obj, "00100020") == ["PAT01"]
    assert values(obj, "00201208") == [4]


def test_includefield_all_keeps_the_defaults(env: Env) -> None:
    uid = env.corpus.study_uid["s2"]
    obj = env.one("/studies", [("includefield", "all")], "0020000D", uid)
    for tag in ("00080020", "00080050", "00080061", "00081190", "00100010", "00201206"):
        assert "Value" in obj[tag], tag
    study, series = env.corpus.study_uid["s1"], env.corpus.series_uid["s1.ct"]
    obj = env.one(f"/studies/{study}/series", [("includefield", "all")], "0020000E", series)
    assert obj.keys() >= SERIES_DEFAULTS
    assert values(obj, "0008103E") == ["Axial"]


def test_includefield_of_attributes_not_stored(env: Env) -> None:
    uid = env.corpus.study_uid["MR_small.dcm"]  # has no StudyDescription
    obj = env.one("/studies", [("includefield", "StudyDescription")], "0020000D", uid)
    assert "Value" not in obj.get("00081030", {})
    uid = env.corpus.study_uid["s1"]
    obj = env.one("/studies", [("includefield", "PatientComments")], "0020000D", uid)
    assert "Value" not in obj.get("00104000", {})


# ------------------------------------------------------------------ warnings, accept


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("/studies", [("PatientID", "PAT01"), ("ImageType", "ORIGINAL")], 1),
        ("/series", [("Modality", "SR"), ("ImageType", "ORIGINAL")], 1),
        ("/instances", [("InstanceNumber", "3"), ("00080008", "ORIGINAL")], 3),
    ],
    ids=str,
)
def test_unsupported_matching_key_is_ignored_with_warning(
    env: Env, path: str, params: Params, expected: int
) -> None:
    r = env.get(path, params)
    assert r.status_code == 200, r.text
    assert len(r.json()) == expected
    warning = r.headers.get("Warning", "")
    assert "299" in warning and "ImageType" in warning


def test_no_warning_for_a_complete_answer(env: Env) -> None:
    r = env.get("/studies", [("PatientID", "PAT01")])
    assert r.status_code == 200 and "Warning" not in r.headers


@pytest.mark.parametrize(
    "accept",
    [None, "application/dicom+json", "application/json", "application/dicom+json, */*"],
)
def test_accept(env: Env, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    r = env.get("/studies", [("PatientID", "PAT02")], headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0].strip() == DICOM_JSON
    [obj] = r.json()
    assert values(obj, "0020000D") == [env.corpus.study_uid["s2"]]


def test_empty_results(env: Env) -> None:
    for path, params in [
        ("/studies", [("PatientID", "NOPE")]),
        (f"/studies/{new_uid()}/series", []),
        (f"/studies/{new_uid()}/instances", []),
        (f"/studies/{new_uid()}/series/{new_uid()}/instances", []),
        ("/instances", [("InstanceNumber", "99")]),
    ]:
        r = env.get(path, params)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].split(";")[0].strip() == DICOM_JSON
        assert r.json() == []


# ------------------------------------------------------------------ bad requests

BAD: list[tuple[str, Params, tuple[str, ...]]] = [
    ("/studies", [("Foo", "1")], ("Foo",)),
    ("/studies", [("PatientNme", "X")], ("PatientNme",)),
    ("/studies", [("GGGGEEEE", "1")], ("GGGGEEEE",)),
    ("/instances", [("PatientNme", "X")], ("PatientNme",)),
    ("/studies", [("includefield", "Nope")], ("Nope",)),
    ("/series", [("includefield", "00081030,Nope")], ("Nope",)),
    ("/studies", [("StudyDate", "not-a-date")], ("StudyDate", "not-a-date")),
    ("/studies", [("StudyDate", "20151301")], ("StudyDate", "20151301")),
    ("/studies", [("StudyDate", "2015-01-01")], ("StudyDate", "2015-01-01")),
    ("/series", [("StudyDate", "20150132-")], ("StudyDate", "20150132")),
    ("/studies", [("StudyTime", "2500")], ("StudyTime", "2500")),
    ("/studies", [("StudyInstanceUID", "1.02")], ("StudyInstanceUID", "1.02")),
    ("/studies", [("StudyInstanceUID", "abc")], ("StudyInstanceUID", "abc")),
    ("/series", [("SeriesInstanceUID", "1.2.abc")], ("SeriesInstanceUID", "1.2.abc")),
    ("/series", [("SeriesNumber", "two")], ("SeriesNumber", "two")),
    ("/instances", [("InstanceNumber", "3.5")], ("InstanceNumber", "3.5")),
    ("/studies", [("limit", "abc")], ("limit",)),
    ("/studies", [("limit", "-1")], ("limit",)),
    ("/studies", [("limit", "0")], ("limit",)),
    ("/studies", [("offset", "-5")], ("offset",)),
    ("/studies", [("offset", "x")], ("offset",)),
    ("/studies", [("fuzzymatching", "maybe")], ("fuzzymatching",)),
    ("/studies", [("PatientID", "a"), ("PatientID", "b")], ("PatientID",)),
    ("/studies", [("PatientID", "a"), ("00100020", "b")], ("PatientID", "00100020")),
]


@pytest.mark.parametrize(("path", "params", "words"), BAD, ids=str)
def test_bad_query_is_400(env: Env, path: str, params: Params, words: tuple[str, ...]) -> None:
    r = env.get(path, params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    detail = r.json()["detail"]
    assert any(w in detail for w in words), detail
    assert env.studies([("PatientID", "PAT01")]) == {"s1"}  # still serving


@pytest.mark.parametrize(
    "path",
    [
        "/studies/1.02/series",
        "/studies/abc/instances",
        "/studies/1.2.3/series/1..2/instances",
        "/studies/1." + "2" * 70 + "/series",
    ],
)
def test_malformed_uid_in_path_is_400(env: Env, path: str) -> None:
    r = env.get(path)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert env.studies([("PatientID", "PAT01")]) == {"s1"}


# ------------------------------------------------------------------ paging


def sops(objs: list[Obj]) -> list[str]:
    return [uid_of(o, "00080018") for o in objs]


def test_paging_is_disjoint_complete_and_stable(env: Env) -> None:
    total = len(env.corpus.instances)
    r = env.get("/instances", [("limit", "1000")])
    assert r.status_code == 200 and "Warning" not in r.headers
    full = sops(r.json())
    assert len(full) == total == len(set(full))
    assert set(full) == {i.sop_uid for i in env.corpus.instances}

    def pages() -> list[list[str]]:
        out = []
        for offset in range(0, total, 10):
            r = env.get("/instances", [("limit", "10"), ("offset", str(offset))])
            assert r.status_code == 200, r.text
            page = sops(r.json())
            out.append(page)
            warning = r.headers.get("Warning", "")
            if offset + 10 < total:
                assert len(page) == 10
                assert "299" in warning and "Additional results" in warning, offset
            else:
                assert len(page) == total - offset
                assert "Additional results" not in warning, offset
        return out

    first = pages()
    assert first == pages()  # same order every time
    flat = [uid for page in first for uid in page]
    assert len(flat) == len(set(flat)) == total
    assert set(flat) == set(full)
    assert sops(env.search("/instances", [("limit", "1000")])) == full


def test_paging_edges(env: Env) -> None:
    total = len(env.corpus.instances)
    r = env.get("/instances", [("limit", str(total))])
    assert len(r.json()) == total and "Additional results" not in r.headers.get("Warning", "")
    r = env.get("/instances", [("limit", str(total - 1))])
    assert len(r.json()) == total - 1
    assert "Additional results" in r.headers.get("Warning", "")
    assert "299" in r.headers["Warning"]
    r = env.get("/instances", [("offset", str(total - 1))])
    assert len(r.json()) == 1 and "Additional results" not in r.headers.get("Warning", "")
    for offset in (total, 1000, 10**6):
        r = env.get("/instances", [("offset", str(offset))])
        assert r.status_code == 200 and r.json() == []
        assert "Additional results" not in r.headers.get("Warning", "")
    r = env.get("/studies", [("limit", "5000")])  # clamped to the maximum, not refused
    assert r.status_code == 200 and len(r.json()) == len(ALL_STUDIES)


def test_paging_a_filtered_study_search(env: Env) -> None:
    got: list[str] = []
    for offset in (0, 2, 4):
        params = [("PatientID", "PAT0*"), ("limit", "2"), ("offset", str(offset))]
        r = env.get("/studies", params)
        assert r.status_code == 200
        got += [env.corpus.study_label(uid_of(o, "0020000D")) for o in r.json()]
        assert ("Additional results" in r.headers.get("Warning", "")) == (offset < 4)
    assert sorted(got) == ["s1", "s2", "s3", "s5", "s7"]


def test_default_and_maximum_limit(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(qido_default_limit="3", qido_max_limit="5")
    studies = [new_uid() for _ in range(7)]
    parts = [make_instance(study=s, patient_id=f"LIM{i}") for i, s in enumerate(studies)]
    with httpx.Client(base_url=server.root, timeout=60) as client:
        r = client.post("/studies", content=multipart(*parts), headers=stow_headers())
        assert r.status_code == 200, r.text

        def page(**params: str) -> tuple[list[str], str]:
            r = client.get("/studies", params=params)
            assert r.status_code == 200, r.text
            return [uid_of(o, "0020000D") for o in r.json()], r.headers.get("Warning", "")

        got, warning = page()
        assert len(got) == 3 and "299" in warning and "Additional results" in warning
        got, warning = page(limit="100")
        assert len(got) == 5 and "Additional results" in warning
        got, warning = page(limit="5", offset="5")
        assert len(got) == 2 and "Additional results" not in warning
        got, warning = page(limit="3", offset="4")
        assert len(got) == 3 and "Additional results" not in warning
        got, warning = page(limit="4")
        assert len(got) == 4 and "Additional results" in warning
        union: list[str] = []
        for offset in (0, 3, 6):
            got, warning = page(offset=str(offset))
            union += got
            assert ("Additional results" in warning) == (offset < 6)
        assert sorted(union) == sorted(studies)


# ------------------------------------------------------------------ counts follow STOW


def test_counts_update_as_instances_arrive(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    study, ct, mr = new_uid(), new_uid(), new_uid()

    def store(data: bytes) -> None:
        r = client.post("/studies", content=multipart(data), headers=stow_headers())
        assert r.status_code == 200, r.text

    def state() -> tuple[Any, ...]:
        [st] = client.get("/studies", params={"StudyInstanceUID": study}).json()
        series = client.get(f"/studies/{study}/series").json()
        per_series = {uid_of(o, "0020000E"): values(o, "00201209") for o in series}
        n_instances = len(client.get(f"/studies/{study}/instances").json())
        return (
            values(st, "00201206"),
            values(st, "00201208"),
            values(st, "00080061"),
            per_series,
            n_instances,
        )

    first = make_instance(study=study, series=ct, instance_number=1)
    second = make_instance(study=study, series=ct, instance_number=2)
    mr_ds = make_dataset(study=study, series=mr, instance_number=1)
    mr_ds.Modality = "MR"
    with httpx.Client(base_url=server.root, timeout=60) as client:
        store(first)
        assert state() == ([1], [1], ["CT"], {ct: [1]}, 1)
        store(second)
        assert state() == ([1], [2], ["CT"], {ct: [2]}, 2)
        store(encode(mr_ds))
        assert state() == ([2], [3], ["CT", "MR"], {ct: [2], mr: [1]}, 3)
        store(second)  # identical re-upload
        assert state() == ([2], [3], ["CT", "MR"], {ct: [2], mr: [1]}, 3)


# ------------------------------------------------------------------ dicomweb-client


def test_dicomweb_client(env: Env) -> None:
    client = DICOMwebClient(url=env.server.root)
    uid = env.corpus.study_uid

    def labels(objs: list[Obj]) -> set[str]:
        return {env.corpus.study_label(uid_of(o, "0020000D")) for o in objs}

    assert labels(client.search_for_studies(search_filters={"PatientID": "PAT01"})) == {"s1"}
    found = client.search_for_studies(
        search_filters={"PatientName": "Doe*"}, fields=["StudyDescription"]
    )
    assert {
        env.corpus.study_label(uid_of(o, "0020000D")): values(o, "00081030") for o in found
    } == {
        "s1": ["Chest CT"],
        "s2": ["Brain MR"],
        "s3": ["Abdomen"],
        "s7": ["Spine"],
    }
    assert labels(
        client.search_for_studies(search_filters={"StudyDate": "20150101-20151231"})
    ) - UNDATED == {"s1", "s2", "s5", "s6"}
    assert labels(
        client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "jo"})
    ) == {"s1", "s7"}

    pages = [
        labels(client.search_for_studies(search_filters={"PatientID": "PAT0*"}, limit=2, offset=o))
        for o in (0, 2, 4)
    ]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert set().union(*pages) == {"s1", "s2", "s3", "s5", "s7"}
    remaining = client.search_for_studies(
        search_filters={"PatientID": "PAT0*"}, limit=2, get_remaining=True
    )
    assert labels(remaining) == {"s1", "s2", "s3", "s5", "s7"} and len(remaining) == 5

    series = client.search_for_series(study_instance_uid=uid["s3"])
    assert {env.corpus.series_label(uid_of(o, "0020000E")) for o in series} == {
        "s3.ct",
        "s3.mr",
        "s3.us",
    }
    series = client.search_for_series(search_filters={"Modality": "US"})
    assert {env.corpus.series_label(uid_of(o, "0020000E")) for o in series} == {"s3.us", "s5.us"}

    instances = client.search_for_instances(
        study_instance_uid=uid["s1"], series_instance_uid=env.corpus.series_uid["s1.ct"]
    )
    assert {env.corpus.sop_label(uid_of(o, "00080018")) for o in instances} == {
        "s1.ct#1",
        "s1.ct#2",
        "s1.ct#3",
    }
    instances = client.search_for_instances(
        search_filters={"SOPClassUID": SOP_CLASS["US"]}, fields=["SeriesDescription"]
    )
    assert {env.corpus.sop_label(uid_of(o, "00080018")) for o in instances} == {
        "s3.us#1",
        "s3.us#2",
        "s5.us#1",
    }
    instances = client.search_for_instances(study_instance_uid=uid["s4"])
    assert len(instances) == 4
