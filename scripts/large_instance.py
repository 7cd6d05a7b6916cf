#!/usr/bin/env python3
"""STOW a generated multi-frame instance of any size and retrieve it; report peak RSS.

The instance is generated on the fly and never held in memory on either side: the
client streams it, the server (started here, embedded defaults, a fresh data folder)
must stream it to storage. The server's peak resident memory is read from the
kernel's high-water mark (``VmHWM`` in ``/proc/<pid>/status``), so no spike between
samples is missed.

    python scripts/large_instance.py                 # 2 GiB, the foundation issue's case
    python scripts/large_instance.py --size-mib 256  # quicker
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.server import ServerProcess

FRAME_ROWS = FRAME_COLS = 512
FRAME_BYTES = FRAME_ROWS * FRAME_COLS * 2
CHUNK = 1024 * 1024
BOUNDARY = "large-instance-boundary"


def header(frames: int) -> tuple[bytes, str, str, str]:
    """Part 10 bytes up to and including the Pixel Data element header."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7.3")  # multi-frame SC
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = sop, study, series
    ds.PatientName, ds.PatientID, ds.Modality = "LARGE^INSTANCE", "LARGE1", "OT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.NumberOfFrames = FRAME_ROWS, FRAME_COLS, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * FRAME_BYTES)
    return out.getvalue() + pixel_header, study, series, sop


def pixel_chunks(total: int) -> Iterator[bytes]:
    """Deterministic, incompressible-looking pixel bytes, one chunk at a time."""
    seed = hashlib.sha256(b"large-instance").digest()
    block = b"".join(
        hashlib.sha256(seed + i.to_bytes(4, "little")).digest() for i in range(CHUNK // 32)
    )
    sent = 0
    counter = 0
    while sent < total:
        n = min(CHUNK, total - sent)
        # vary each chunk cheaply so no two chunks are the same
        chunk = counter.to_bytes(8, "little") + block[8:n] if n >= 8 else block[:n]
        counter += 1
        sent += n
        yield chunk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048, help="pixel data size (MiB)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args()
    frames = max(1, args.size_mib * 1024 * 1024 // FRAME_BYTES)
    head, study, series, sop = header(frames)
    pixel_bytes = frames * FRAME_BYTES
    part_open = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    part_close = f"\r\n--{BOUNDARY}--\r\n".encode()
    instance_size = len(head) + pixel_bytes
    body_size = len(part_open) + instance_size + len(part_close)
    sent_hash = hashlib.sha256()

    def body() -> Iterator[bytes]:
        yield part_open
        sent_hash.update(head)
        yield head
        for chunk in pixel_chunks(pixel_bytes):
            sent_hash.update(chunk)
            yield chunk
        yield part_close

    workdir = Path(tempfile.mkdtemp(prefix="large-instance-"))
    server = ServerProcess(workdir / "data").start()
    assert server.proc is not None
    status_file = Path(f"/proc/{server.proc.pid}/status")

    def peak_rss_mib() -> float:
        for line in status_file.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    result: dict[str, object] = {"instance_bytes": instance_size, "frames": frames}
    try:
        result["rss_after_start_mib"] = round(peak_rss_mib(), 1)
        with httpx.Client(base_url=server.root, timeout=None) as client:
            t0 = time.perf_counter()
            r = client.post(
                "/studies",
                content=body(),
                headers={
                    "Content-Type": (
                        f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
                    ),
                    "Content-Length": str(body_size),
                    "Accept": "application/dicom+json",
                },
            )
            stow_s = time.perf_counter() - t0
            result["stow_status"] = r.status_code
            result["stow_seconds"] = round(stow_s, 1)
            result["stow_MB_per_s"] = round(instance_size / stow_s / 1e6, 1)
            if r.status_code != 200:
                result["stow_body"] = r.text[:2000]
            result["peak_rss_after_stow_mib"] = round(peak_rss_mib(), 1)

            got_hash = hashlib.sha256()
            got = 0
            t0 = time.perf_counter()
            url = f"/studies/{study}/series/{series}/instances/{sop}"
            with client.stream(
                "GET", url, headers={"Accept": "application/dicom; transfer-syntax=*"}
            ) as resp:
                result["retrieve_status"] = resp.status_code
                for chunk in resp.iter_bytes(CHUNK):
                    got_hash.update(chunk)
                    got += len(chunk)
            retrieve_s = time.perf_counter() - t0
            result["retrieve_seconds"] = round(retrieve_s, 1)
            result["retrieve_MB_per_s"] = round(got / retrieve_s / 1e6, 1)
            result["byte_identical"] = (
                got == instance_size and got_hash.digest() == sent_hash.digest()
            )
            result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    finally:
        server.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=1))
    ok = result.get("byte_identical") is True and float(str(result["peak_rss_mib"])) < 300
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
