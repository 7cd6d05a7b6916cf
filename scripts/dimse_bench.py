#!/usr/bin/env python3
"""C-STORE throughput: DCMTK storescu sends N generated instances on one association,
into the DIMSE sidecar and into Orthanc's DICOM port, on the same machine, in turn.

Each run starts its server on a fresh data folder and free ports (so it does not
disturb another Orthanc on 4242), times storescu from the first byte to the release of
the association, then checks that every instance was stored (our index rows, Orthanc's
/statistics). Orthanc: Debian's ``orthanc`` package (``apt-get install -y orthanc``).

    python scripts/dimse_bench.py                     # 500 x 512 KB, two runs each
    python scripts/dimse_bench.py --count 100 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.dimse import SidecarProcess
from tests.server import free_port

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def make_corpus(folder: Path, count: int, size: int) -> int:
    """``count`` CT instances of one study, each about ``size`` bytes of pixel data."""
    folder.mkdir(parents=True, exist_ok=True)
    side = int((size // 2) ** 0.5)
    study = generate_uid()
    series = [generate_uid() for _ in range(max(1, count // 100))]
    total = 0
    for i in range(count):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(CT_IMAGE)
        meta.MediaStorageSOPInstanceUID = UID(sop)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series[i % len(series)]
        ds.PatientName, ds.PatientID, ds.Modality = "BENCH^DIMSE", "BENCH", "CT"
        ds.StudyDate, ds.InstanceNumber = "20240101", i + 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = side
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = os.urandom(side * side * 2)
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return total


def storescu(port: int, ae_title: str, corpus: Path) -> float:
    """Seconds storescu takes to send the corpus on one association."""
    files = sorted(str(p) for p in corpus.glob("*.dcm"))
    start = time.perf_counter()
    result = subprocess.run(
        ["storescu", "-aec", ae_title, "127.0.0.1", str(port), *files],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stdout}{result.stderr}")
    return elapsed


def run_sidecar(corpus: Path, work: Path, count: int) -> float:
    proc = SidecarProcess(work / "data").start()
    try:
        elapsed = storescu(proc.port, proc.ae_title, corpus)
    except RuntimeError as exc:
        raise RuntimeError(f"into the sidecar: {exc}\n{proc.log.read_text()[-3000:]}") from None
    finally:
        proc.stop()
    with sqlite3.connect(work / "data" / "index.sqlite") as conn:
        stored = conn.execute("SELECT count(*) FROM instances").fetchone()[0]
    if stored != count:
        raise RuntimeError(f"sidecar stored {stored} of {count}")
    return elapsed


def run_orthanc(corpus: Path, work: Path, count: int) -> float:
    http_port, dicom_port = free_port(), free_port()
    (work / "db").mkdir(parents=True)
    config = {
        "Name": "dimse-bench",
        "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "StorageCompression": False,
        "Plugins": [],
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    with (work / "orthanc.log").open("wb") as log:
        proc = subprocess.Popen(
            ["/usr/sbin/Orthanc", str(work / "orthanc.json")], stdout=log, stderr=log
        )
    try:
        url = f"http://127.0.0.1:{http_port}"
        for _ in range(150):
            try:
                if httpx.get(url + "/system", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("Orthanc did not start")
        try:
            elapsed = storescu(dicom_port, "ORTHANC", corpus)
        except RuntimeError as exc:
            log = (work / "orthanc.log").read_text()[-3000:]
            raise RuntimeError(f"into Orthanc: {exc}\n{log}") from None
        stored = httpx.get(url + "/statistics", timeout=30).json()["CountInstances"]
    finally:
        proc.terminate()
        proc.wait(60)
    if stored != count:
        raise RuntimeError(f"Orthanc stored {stored} of {count}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--size-kb", type=int, default=512)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    for tool in ("storescu", "/usr/sbin/Orthanc"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (apt-get install -y dcmtk orthanc)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="dimse-bench-") as tmp:
        root = Path(tmp)
        total = make_corpus(root / "corpus", args.count, args.size_kb * 1024)
        print(f"corpus: {args.count} instances, {total / 1e6:.0f} MB")
        results: dict[str, list[float]] = {"sidecar": [], "orthanc": []}
        for run in range(args.runs):
            for name, fn in (("sidecar", run_sidecar), ("orthanc", run_orthanc)):
                elapsed = fn(root / "corpus", root / f"{name}{run}", args.count)
                results[name].append(elapsed)
                print(
                    f"{name:8} run {run + 1}: {elapsed:6.2f} s  "
                    f"{args.count / elapsed:6.1f} instances/s  {total / elapsed / 1e6:6.1f} MB/s"
                )
                shutil.rmtree(root / f"{name}{run}", ignore_errors=True)
        best = {k: args.count / min(v) for k, v in results.items()}
        print(
            f"best: sidecar {best['sidecar']:.1f}/s, Orthanc {best['orthanc']:.1f}/s, "
            f"ratio {best['sidecar'] / best['orthanc']:.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
