"""The QIDO-RS test corpus: generated studies with chosen values, plus pydicom's files.

Every expected answer in ``tests/test_qido.py`` is written out by hand in terms of the
labels below (``s1``..``s7`` for generated studies, the file name for pydicom's files),
never computed by re-implementing the matching rules.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from tests.dicomgen import encode, make_dataset, new_uid
from tests.helpers import pydicom_file

SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "SR": "1.2.840.10008.5.1.4.1.1.88.11",
}


@dataclass(frozen=True)
class SeriesSpec:
    label: str
    modality: str
    number: int
    description: str
    instances: tuple[int, ...]  # Instance Numbers
    pps_date: str = ""
    pps_time: str = ""
    frames: dict[int, int] = field(default_factory=dict)  # Instance Number -> frames


@dataclass(frozen=True)
class StudySpec:
    label: str
    patient_name: str
    patient_id: str
    accession: str
    date: str
    time: str
    description: str
    referring: str
    study_id: str
    birth_date: str
    sex: str
    series: tuple[SeriesSpec, ...]


STUDIES: tuple[StudySpec, ...] = (
    StudySpec(
        "s1", "DOE^JOHN", "PAT01", "ACC11", "20150315", "101500", "Chest CT",
        "WELBY^MARCUS", "S1", "19700101", "M",
        (
            SeriesSpec("s1.ct", "CT", 1, "Axial", (1, 2, 3), "20150315", "101600"),
            SeriesSpec("s1.sr", "SR", 2, "Report", (1,)),
        ),
    ),
    StudySpec(
        "s2", "Doe^Peter", "PAT02", "ACC21", "20151231", "120000", "Brain MR",
        "house^gregory", "S2", "19800202", "M",
        (
            SeriesSpec("s2.mr1", "MR", 1, "T1", (1, 2)),
            SeriesSpec("s2.mr2", "MR", 2, "T2", (3, 4), "20151231", "120500"),
        ),
    ),
    StudySpec(
        "s3", "DOE^JANE^^^", "PAT03", "ACC31", "20160101", "083000", "Abdomen",
        "WELBY^MARCUS", "S3", "19900303", "F",
        (
            SeriesSpec("s3.ct", "CT", 1, "Scout", (1,)),
            SeriesSpec("s3.mr", "MR", 2, "Liver", (1,)),
            SeriesSpec("s3.us", "US", 3, "Doppler", (1, 2)),
        ),
    ),
    StudySpec(
        "s4", "MÜLLER^HANS", "PAT10", "ACC1", "20141231", "235959", "Knee",
        "", "S4", "19600404", "M",
        (SeriesSpec("s4.mr", "MR", 5, "Sagittal", (1, 2, 3, 4), frames={4: 2}),),
    ),
    StudySpec(
        "s5", "O'BRIEN^PAT", "PAT04", "XACC41", "20150101", "000000", "Follow-up",
        "", "S5", "20000505", "O",
        (SeriesSpec("s5.us", "US", 1, "Thyroid", (1,)),),
    ),
    StudySpec(
        "s6", "SMITH^ANNA", "pat01", "ACC51", "20150601", "120100", "chest ct",
        "", "S6", "19750606", "F",
        (SeriesSpec("s6.ct", "CT", 1, "Helical", (1, 2)),),
    ),
    StudySpec(
        "s7", "DOE^JOHNNY", "PAT05", "ACC71", "20170707", "140000", "Spine",
        "", "S7", "20100101", "M",
        (
            SeriesSpec("s7.mr", "MR", 1, "Lumbar", (2,)),
            SeriesSpec("s7.ct", "CT", 3, "Lumbar CT", (1,)),
        ),
    ),
)  # fmt: skip

# pydicom's bundled files, each one study with one series of one instance.
CHARSET_FILES = (
    "chrH31.dcm",  # Yamada^Tarou=山田^太郎=やまだ^たろう
    "chrX1.dcm",  # Wang^XiaoDong=王^小東
    "chrI2.dcm",  # Hong^Gildong=洪^吉洞=홍^길동
    "chrGreek.dcm",  # Διονυσιος
    "chrRuss.dcm",  # Люкceмбypг
    "chrArab.dcm",  # قباني^لنزار
    "chrGerm.dcm",  # Äneas^Rüdiger
    "chrFren.dcm",  # Buc^Jérôme
    "chrJapMulti.dcm",  # やまだ^たろう, study date 20080504, CR
    "chrKoreanMulti.dcm",  # 김희중, study date 20080504, CR
)
OTHER_FILES = ("CT_small.dcm", "MR_small.dcm")
FILES = CHARSET_FILES + OTHER_FILES
# Files whose StudyDate / StudyTime are empty: whether an empty value matches a
# range is left open by the contract, so range tests tolerate them either way.
UNDATED = frozenset(CHARSET_FILES[:8])


@dataclass
class Instance:
    study: str  # label
    series: str  # label
    number: int
    sop_uid: str
    sop_class: str
    frames: int = 1


@dataclass
class Corpus:
    """UIDs by label, and every instance stored."""

    study_uid: dict[str, str] = field(default_factory=dict)
    series_uid: dict[str, str] = field(default_factory=dict)
    instances: list[Instance] = field(default_factory=list)
    datasets: dict[str, Dataset] = field(default_factory=dict)  # pydicom files by name
    parts: list[bytes] = field(default_factory=list)

    def study_label(self, uid: str) -> str:
        return {v: k for k, v in self.study_uid.items()}[uid]

    def series_label(self, uid: str) -> str:
        return {v: k for k, v in self.series_uid.items()}[uid]

    def sop_label(self, uid: str) -> str:
        for inst in self.instances:
            if inst.sop_uid == uid:
                return f"{inst.series}#{inst.number}"
        raise KeyError(uid)

    def instance(self, label: str) -> Instance:
        """``s1.ct#2`` -> that instance; ``CT_small.dcm`` -> the file's instance."""
        return next(i for i in self.instances if f"{i.series}#{i.number}" == label)

    def spec(self, label: str) -> StudySpec:
        return next(s for s in STUDIES if s.label == label)

    @property
    def all_studies(self) -> set[str]:
        return set(self.study_uid)

    @property
    def all_series(self) -> set[str]:
        return set(self.series_uid)

    @property
    def all_instances(self) -> set[str]:
        return {f"{i.series}#{i.number}" for i in self.instances}


def _generated(study: StudySpec, series: SeriesSpec, corpus: Corpus, number: int) -> bytes:
    frames = series.frames.get(number, 1)
    ds = make_dataset(
        study=corpus.study_uid[study.label],
        series=corpus.series_uid[series.label],
        patient_name=study.patient_name,
        patient_id=study.patient_id,
        instance_number=number,
        frames=frames,
        pixel_seed=number,
    )
    sop_class = SOP_CLASS[series.modality]
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.Modality = series.modality
    ds.AccessionNumber = study.accession
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.StudyDescription = study.description
    if study.referring:
        ds.ReferringPhysicianName = study.referring
    ds.StudyID = study.study_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description
    if series.pps_date:
        ds.PerformedProcedureStepStartDate = series.pps_date
        ds.PerformedProcedureStepStartTime = series.pps_time
    if series.modality == "SR":  # a document: no image attributes at all
        for keyword in (
            "SamplesPerPixel",
            "PhotometricInterpretation",
            "Rows",
            "Columns",
            "BitsAllocated",
            "BitsStored",
            "HighBit",
            "PixelRepresentation",
            "PixelData",
        ):
            delattr(ds, keyword)
    corpus.instances.append(
        Instance(study.label, series.label, number, ds.SOPInstanceUID, sop_class, frames)
    )
    return encode(ds)


def build_corpus() -> Corpus:
    corpus = Corpus()
    for study in STUDIES:
        corpus.study_uid[study.label] = new_uid()
        for series in study.series:
            corpus.series_uid[series.label] = new_uid()
            for number in series.instances:
                corpus.parts.append(_generated(study, series, corpus, number))
    for name in FILES:
        data = pydicom_file(name)
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        corpus.datasets[name] = ds
        corpus.study_uid[name] = str(ds.StudyInstanceUID)
        corpus.series_uid[name] = str(ds.SeriesInstanceUID)
        corpus.instances.append(
            Instance(name, name, int(ds.InstanceNumber), str(ds.SOPInstanceUID), ds.SOPClassUID)
        )
        corpus.parts.append(data)
    return corpus
