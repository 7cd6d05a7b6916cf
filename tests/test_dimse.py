"""The DIMSE sidecar end to end: DCMTK tools as the peers, real associations on
loopback, the HTTP service on the same data folder to read back what C-STORE stored."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.dicomgen import encode, make_dataset, new_uid
from tests.dimse import SidecarProcess, StoreSCP, run, split_part10
from tests.helpers import PYDICOM_DATA
from tests.server import ServerProcess

pytestmark = pytest.mark.timeout(120)

# pydicom's bundled files, one per transfer syntax family.
FILES = {
    "1.2.840.10008.1.2.1": "CT_small.dcm",  # Explicit VR Little Endian
    "1.2.840.10008.1.2": "MR_small_implicit.dcm",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.50": "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline
    "1.2.840.10008.1.2.4.90": "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.5": "MR_small_RLE.dcm",  # RLE Lossless
    "1.2.840.10008.1.2.4.80": "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "1.2.840.10008.1.2.1.99": "image_dfl.dcm",  # Deflated Explicit VR Little Endian
}


class Pair:
    """The HTTP service and the sidecar sharing one data folder."""

    def __init__(self, root: Path, **env: str) -> None:
        data = root / "data"
        self.http = ServerProcess(data).start()
        self.dimse = SidecarProcess(data, {f"DICOMWEB_{k.upper()}": v for k, v in env.items()})
        self.dimse.start()

    @property
    def address(self) -> list[str]:
        return ["-aec", self.dimse.ae_title, "127.0.0.1", str(self.dimse.port)]

    def retrieve(self, study: str, series: str, sop: str) -> bytes:
        url = f"{self.http.root}/studies/{study}/series/{series}/instances/{sop}"
        response = httpx.get(
            url, headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30
        )
        assert response.status_code == 200, response.text
        return response.content

    def rows(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.dimse.data_dir / "index.sqlite") as conn:
            return conn.execute("SELECT sop_uid, transfer_syntax FROM instances").fetchall()

    def stop(self) -> None:
        self.dimse.stop()
        self.http.stop()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreSCP]:
    """DCMTK's storescp, bit-preserving: what a DCMTK sender puts on the wire."""
    scp = StoreSCP(tmp_path_factory.mktemp("mirror")).start()
    yield scp
    scp.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(tmp_path_factory.mktemp("dimse"))
    yield p
    p.stop()


def test_echo(pair: Pair) -> None:
    result = run("echoscu", *pair.address)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("syntax", "name"), FILES.items())
def test_store_keeps_bytes_in_each_transfer_syntax(
    pair: Pair, mirror: StoreSCP, tmp_path: Path, syntax: str, name: str
) -> None:
    ds = pydicom.dcmread(PYDICOM_DATA / "test_files" / name)
    assert ds.file_meta.TransferSyntaxUID == syntax
    # Several of these files share their UIDs: give each its own.
    ds.StudyInstanceUID, ds.SeriesInstanceUID = new_uid(), new_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    # dcmsend proposes the file's own transfer syntax (and, for uncompressed files,
    # Explicit VR Little Endian, which we prefer) and, with -dn, never decompresses;
    # storescu -xi proposes Implicit VR Little Endian only. DCMTK re-encodes a data set
    # as it sends it (trailing padding dropped), so "as sent" is what a bit-preserving
    # storescp receives from the same command.
    for port, title in ((pair.dimse.port, pair.dimse.ae_title), (mirror.port, mirror.ae_title)):
        if syntax == "1.2.840.10008.1.2":
            command = ["storescu", "-xi", "-aec", title, "127.0.0.1", str(port)]
        else:
            command = ["dcmsend", "-dn", "-aec", title, "127.0.0.1", str(port)]
        result = run(*command, str(path))
        assert result.returncode == 0, result.stdout + result.stderr
    assert (ds.SOPInstanceUID, syntax) in pair.rows()
    stored = pair.retrieve(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    [wire] = [p for p in mirror.received() if ds.SOPInstanceUID in p.name]
    meta, dataset = split_part10(stored)
    assert dataset == split_part10(wire.read_bytes())[1]  # the data set exactly as sent
    back = pydicom.dcmread(BytesIO(meta + dataset))
    assert back.PixelData == ds.PixelData

    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID


def findscu(pair: Pair, tmp: Path, *keys: str, model: str = "-S") -> list[pydicom.Dataset]:
    """findscu's responses, extracted to files and read back."""
    out = tmp / f"find{len(list(tmp.glob('find*')))}"
    out.mkdir()
    args = [a for k in keys for a in ("-k", k)]
    result = run("findscu", model, "-X", "-od", str(out), *args, *pair.address)
    assert result.returncode == 0, result.stdout + result.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture(scope="module")
def find_data(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two patients; one study with a CT and an MR series (two CT images), one other."""
    folder = tmp_path_factory.mktemp("find")
    study, other = new_uid(), new_uid()
    ct, mr, series3 = new_uid(), new_uid(), new_uid()
    specs = [
        (study, ct, "CT", "FIND^ALICE", "FINDPID1", 1),
        (study, ct, "CT", "FIND^ALICE", "FINDPID1", 2),
        (study, mr, "MR", "FIND^ALICE", "FINDPID1", 1),
        (other, series3, "CT", "FIND^BOB", "FINDPID2", 1),
    ]
    paths = []
    for i, (st, se, modality, name, pid, number) in enumerate(specs):
        ds = make_dataset(
            study=st, series=se, patient_name=name, patient_id=pid, instance_number=number
        )
        ds.Modality = modality
        ds.StudyDate = "20240315" if st == study else "20230101"
        path = folder / f"{i}.dcm"
        path.write_bytes(encode(ds))
        paths.append(str(path))
    result = run("storescu", *pair.address, *paths)
    assert result.returncode == 0, result.stderr
    return {"study": study, "other": other, "ct": ct, "mr": mr}


def test_find_study_level(pair: Pair, find_data: dict[str, str], tmp_path: Path) -> None:
    found = findscu(
        pair,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "PatientName=find^al*",
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "StudyDescription",
    )
    assert [d.StudyInstanceUID for d in found] == [find_data["study"]]
    [answer] = found
    assert set(answer.ModalitiesInStudy) == {"CT", "MR"}
    assert int(answer.NumberOfStudyRelatedInstances) == 3
    assert answer.PatientName == "FIND^ALICE"
    assert "StudyDescription" in answer and answer.StudyDescription == ""  # asked, not stored
    assert answer.QueryRetrieveLevel == "STUDY"
    # a date range, as QIDO-RS matches it
    dated = findscu(
        pair,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "StudyDate=20240301-20240331",
        "PatientID=FINDPID*",
        "StudyInstanceUID",
    )
    assert [d.StudyInstanceUID for d in dated] == [find_data["study"]]


def test_find_series_level(pair: Pair, find_data: dict[str, str], tmp_path: Path) -> None:
    found = findscu(
        pair,
        tmp_path,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={find_data['study']}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    by_modality = {d.Modality: d for d in found}
    assert set(by_modality) == {"CT", "MR"}
    assert by_modality["CT"].SeriesInstanceUID == find_data["ct"]
    assert int(by_modality["CT"].NumberOfSeriesRelatedInstances) == 2
    only_mr = findscu(
        pair,
        tmp_path,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={find_data['study']}",
        "Modality=MR",
        "SeriesInstanceUID",
    )
    assert [d.SeriesInstanceUID for d in only_mr] == [find_data["mr"]]


def test_find_image_level(pair: Pair, find_data: dict[str, str], tmp_path: Path) -> None:
    found = findscu(
        pair,
        tmp_path,
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={find_data['study']}",
        f"SeriesInstanceUID={find_data['ct']}",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    assert sorted(int(d.InstanceNumber) for d in found) == [1, 2]
    assert all(d.SOPInstanceUID for d in found)


def test_find_patient_root(pair: Pair, find_data: dict[str, str], tmp_path: Path) -> None:
    patients = findscu(
        pair,
        tmp_path,
        "QueryRetrieveLevel=PATIENT",
        "PatientID=FINDPID*",
        "PatientName",
        model="-P",
    )
    assert sorted(str(d.PatientName) for d in patients) == ["FIND^ALICE", "FIND^BOB"]
    studies = findscu(
        pair,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "PatientID=FINDPID2",
        "StudyInstanceUID",
        model="-P",
    )
    assert [d.StudyInstanceUID for d in studies] == [find_data["other"]]


def test_find_bad_identifier_fails_and_scp_keeps_serving(pair: Pair, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    out.mkdir()
    result = run(
        "findscu",
        "-v",
        "-S",
        "-X",
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyDate=2024-13-45",
        *pair.address,
    )
    assert "Failed: UnableToProcess" in result.stdout + result.stderr  # 0xC000
    assert list(out.glob("rsp*.dcm")) == []
    assert run("echoscu", *pair.address).returncode == 0
