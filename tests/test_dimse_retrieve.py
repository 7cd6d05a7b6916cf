"""C-GET and C-MOVE: DCMTK getscu and movescu against the sidecar, storescp as the move
destination."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.dicomgen import encode, make_dataset, new_uid
from tests.dimse import SidecarProcess, StoreSCP, run

pytestmark = pytest.mark.timeout(120)


class Setup:
    def __init__(self, root: Path) -> None:
        self.dest = StoreSCP(root / "dest", ae_title="MOVEDEST").start()
        destinations = [
            {"ae_title": "MOVEDEST", "host": "127.0.0.1", "port": self.dest.port, "forward": False}
        ]
        self.sidecar = SidecarProcess(
            root / "data", {"DICOMWEB_DIMSE_FORWARD": json.dumps(destinations)}
        ).start()
        self.address = ["-aec", self.sidecar.ae_title, "127.0.0.1", str(self.sidecar.port)]
        self.study, self.series = new_uid(), new_uid()
        self.instances: dict[str, pydicom.Dataset] = {}
        paths = []
        for number in (1, 2, 3):
            ds = make_dataset(study=self.study, series=self.series, instance_number=number)
            path = root / f"{number}.dcm"
            path.write_bytes(encode(ds))
            paths.append(str(path))
            self.instances[ds.SOPInstanceUID] = ds
        other = root / "other.dcm"
        other.write_bytes(encode(make_dataset()))  # another study, never retrieved here
        stored = run("storescu", *self.address, *paths, str(other))
        assert stored.returncode == 0, stored.stderr

    def stop(self) -> None:
        self.sidecar.stop()
        self.dest.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    s = Setup(tmp_path_factory.mktemp("retrieve"))
    yield s
    s.stop()


def read_all(folder: Path) -> dict[str, pydicom.Dataset]:
    return {
        ds.SOPInstanceUID: ds
        for ds in (pydicom.dcmread(p) for p in folder.iterdir() if p.is_file())
    }


def test_c_get_series_and_one_image(setup: Setup, tmp_path: Path) -> None:
    out = tmp_path / "series"
    out.mkdir()
    keys = [
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={setup.study}",
        "-k",
        f"SeriesInstanceUID={setup.series}",
    ]
    result = run("getscu", "-S", "-od", str(out), *keys, *setup.address)
    assert result.returncode == 0, result.stdout + result.stderr
    got = read_all(out)
    assert set(got) == set(setup.instances)
    for sop, ds in got.items():
        assert ds.PixelData == setup.instances[sop].PixelData
        assert ds.PatientName == setup.instances[sop].PatientName
    one = tmp_path / "one"
    one.mkdir()
    sop = next(iter(setup.instances))
    result = run(
        "getscu",
        "-S",
        "-od",
        str(one),
        "-k",
        "QueryRetrieveLevel=IMAGE",
        "-k",
        f"StudyInstanceUID={setup.study}",
        "-k",
        f"SeriesInstanceUID={setup.series}",
        "-k",
        f"SOPInstanceUID={sop}",
        *setup.address,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(read_all(one)) == {sop}


def test_c_get_without_unique_keys_fails(setup: Setup, tmp_path: Path) -> None:
    result = run(
        "getscu",
        "-v",
        "-S",
        "-od",
        str(tmp_path),
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={setup.study}",
        *setup.address,
    )
    # 0xA900, identifier does not match SOP class (DCMTK names the code after C-STORE's)
    assert "Error: DataSetDoesNotMatchSOPClass" in result.stdout + result.stderr
    assert not any(p.is_file() for p in tmp_path.iterdir())


def test_c_move_to_configured_destination(setup: Setup) -> None:
    assert setup.dest.received() == []  # forward: false, nothing was forwarded on store
    result = run(
        "movescu",
        "-S",
        "-aem",
        "MOVEDEST",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={setup.study}",
        *setup.address,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    moved = read_all(setup.dest.folder)
    assert set(moved) == set(setup.instances)
    assert all(moved[s].PixelData == setup.instances[s].PixelData for s in moved)


def test_c_move_to_unknown_destination_is_refused(setup: Setup) -> None:
    result = run(
        "movescu",
        "-v",
        "-S",
        "-aem",
        "NOBODY",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={setup.study}",
        *setup.address,
    )
    assert "MoveDestinationUnknown" in result.stdout + result.stderr  # 0xA801
