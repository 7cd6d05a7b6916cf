"""The sidecar refuses what it must, with the right status, and keeps serving."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from tests.dicomgen import CT_IMAGE, encode, make_dataset
from tests.dimse import SidecarProcess, run, split_part10

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    proc = SidecarProcess(
        tmp_path_factory.mktemp("refusals") / "data",
        {"DICOMWEB_DIMSE_ALLOWED_CALLING_AES": "MODALITY1, MODALITY2"},
    ).start()
    yield proc
    proc.stop()


def rows(sidecar: SidecarProcess) -> list[str]:
    with sqlite3.connect(sidecar.data_dir / "index.sqlite") as conn:
        return [r[0] for r in conn.execute("SELECT sop_uid FROM instances")]


def c_store(sidecar: SidecarProcess, path: Path, monkeypatch: pytest.MonkeyPatch) -> Dataset:
    """Send a file's bytes as they are (pynetdicom, chunked from disk: a data set that
    DCMTK would refuse to send still goes on the wire)."""
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context(CT_IMAGE, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", sidecar.port, ae_title=sidecar.ae_title)
    assert assoc.is_established
    try:
        status: Dataset = assoc.send_c_store(path)
    finally:
        assoc.release()
    assert assoc.is_released  # released cleanly after a refusal
    return status


def test_unknown_calling_ae_is_rejected(sidecar: SidecarProcess) -> None:
    address = ["-aec", sidecar.ae_title, "127.0.0.1", str(sidecar.port)]
    refused = run("echoscu", "-v", "-aet", "STRANGER", *address)
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stdout + refused.stderr
    assert run("echoscu", "-aet", "MODALITY2", *address).returncode == 0


def test_missing_sop_instance_uid_fails_and_stores_nothing(
    sidecar: SidecarProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = make_dataset()
    sop = ds.SOPInstanceUID
    del ds.SOPInstanceUID  # the File Meta still names it, so the request carries it
    path = tmp_path / "no-sop.dcm"
    path.write_bytes(encode(ds))
    status = c_store(sidecar, path, monkeypatch)
    assert status.Status == 0xC000
    assert "SOPInstanceUID" in status.ErrorComment
    assert sop not in rows(sidecar)
    assert list((sidecar.data_dir / "blobs").rglob(f"{sop}*")) == []
    # still serving
    good = tmp_path / "good.dcm"
    good.write_bytes(encode(make_dataset()))
    assert c_store(sidecar, good, monkeypatch).Status == 0x0000


def test_data_set_not_matching_its_request_fails(
    sidecar: SidecarProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = make_dataset()
    data = encode(ds)
    # The File Meta (so the request) names another instance than the data set holds.
    other = ds.SOPInstanceUID[:-1] + ("1" if ds.SOPInstanceUID[-1] != "1" else "2")
    path = tmp_path / "mismatch.dcm"
    path.write_bytes(data.replace(ds.SOPInstanceUID.encode(), other.encode(), 1))
    status = c_store(sidecar, path, monkeypatch)
    assert status.Status == 0xA900
    assert ds.SOPInstanceUID not in rows(sidecar) and other not in rows(sidecar)


def test_duplicates_identical_succeed_conflicting_fail(
    sidecar: SidecarProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = make_dataset()
    first = tmp_path / "first.dcm"
    first.write_bytes(encode(ds))
    assert c_store(sidecar, first, monkeypatch).Status == 0x0000
    assert c_store(sidecar, first, monkeypatch).Status == 0x0000  # idempotent
    ds.PatientName = "OTHER^NAME"
    second = tmp_path / "second.dcm"
    second.write_bytes(encode(ds))
    status = c_store(sidecar, second, monkeypatch)
    assert status.Status == 0x0111  # PS3.7 C: Duplicate SOP Instance
    assert rows(sidecar).count(ds.SOPInstanceUID) == 1
    stored = next((sidecar.data_dir / "blobs").rglob(f"{ds.SOPInstanceUID}.dcm"))
    assert split_part10(stored.read_bytes())[1] == split_part10(first.read_bytes())[1]


def test_association_limit(tmp_path: Path) -> None:
    sidecar = SidecarProcess(tmp_path / "data", {"DICOMWEB_DIMSE_MAX_ASSOCIATIONS": "1"}).start()
    try:
        address = ["-aec", sidecar.ae_title, "127.0.0.1", str(sidecar.port)]
        ae = AE(ae_title="HOLDER")
        ae.add_requested_context("1.2.840.10008.1.1")
        held = ae.associate("127.0.0.1", sidecar.port, ae_title=sidecar.ae_title)
        assert held.is_established
        try:
            busy = run("echoscu", "-v", *address)
            assert busy.returncode != 0
            assert "Association Rejected" in busy.stdout + busy.stderr
        finally:
            held.release()
        # the released association's thread ends shortly after the release
        deadline = time.monotonic() + 10
        while run("echoscu", *address).returncode != 0:
            assert time.monotonic() < deadline, "the freed association slot was not reused"
            time.sleep(0.2)
    finally:
        sidecar.stop()
