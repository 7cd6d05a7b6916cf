#!/usr/bin/env python3
"""STOW a generated multi-frame instance of any size and retrieve it; report peak RSS.

The instance is generated on the fly and never held in memory on either side: the
client streams it, the server (started here, embedded defaults, a fresh data folder)
must stream it to storage. The server's peak resident memory is read from the
kernel's high-water mark (``VmHWM`` in ``/proc/<pid>/status``), so no spike between
samples is missed.

    python scripts/large_instance.py                 # 2 GiB, the foundation issue's case
    python scripts/large_instance.py --size-mib 256  # quicker
    python scripts/large_instance.py --backend s3    # on S3: a moto server started here

With ``--backend s3`` the service stores to a bucket on a moto server this script starts
(S3 over HTTP, as in production); the script then checks through moto that the object
went up as a multipart upload of the expected number of parts and that no upload is
left open, and reports moto's own peak memory too (moto keeps objects in memory, so it
needs several times the instance size; the service must not).
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
from tests.aws import AWS_ENV, MotoServer, unique_name
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


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


class S3Backend:
    """A moto server with a fresh bucket, and what to tell the service to use it."""

    def __init__(self, workdir: Path, part_size: int, concurrency: int) -> None:
        import boto3

        os.environ.update(AWS_ENV)
        self.moto = MotoServer(workdir / "moto.log").start()
        assert self.moto.proc is not None
        self.pid = self.moto.proc.pid
        self.bucket = unique_name("large")
        self.s3 = boto3.client("s3", endpoint_url=self.moto.endpoint)
        self.s3.create_bucket(Bucket=self.bucket)
        self.part_size = part_size
        self.env = {
            "DICOMWEB_STORAGE": f"s3://{self.bucket}/bench",
            "DICOMWEB_S3_ENDPOINT_URL": self.moto.endpoint,
            "DICOMWEB_S3_PART_SIZE": str(part_size),
            "DICOMWEB_S3_UPLOAD_CONCURRENCY": str(concurrency),
        }

    def report(self, instance_size: int) -> dict[str, object]:
        [obj] = self.s3.list_objects_v2(Bucket=self.bucket)["Contents"]
        head = self.s3.head_object(Bucket=self.bucket, Key=obj["Key"], PartNumber=1)
        open_uploads = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return {
            "s3_object_bytes": obj["Size"],
            "s3_parts": head.get("PartsCount"),
            "s3_parts_expected": -(-instance_size // self.part_size),
            "s3_open_uploads": len(open_uploads),
        }

    def stop(self) -> None:
        self.moto.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048, help="pixel data size (MiB)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    parser.add_argument(
        "--backend", choices=["local", "s3"], default="local", help="where the service stores"
    )
    parser.add_argument("--part-size-mib", type=int, default=8, help="S3 part size (MiB)")
    parser.add_argument("--concurrency", type=int, default=4, help="S3 parts in flight")
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
    result: dict[str, object] = {
        "backend": args.backend,
        "instance_bytes": instance_size,
        "frames": frames,
    }
    s3: S3Backend | None = None
    if args.backend == "s3":
        s3 = S3Backend(workdir, args.part_size_mib * 1024 * 1024, args.concurrency)
    server = ServerProcess(workdir / "data", s3.env if s3 else None).start()
    assert server.proc is not None
    pid = server.proc.pid

    def peak_rss() -> float:
        return round(peak_rss_mib(pid), 1)

    try:
        result["rss_after_start_mib"] = peak_rss()
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
            result["peak_rss_after_stow_mib"] = peak_rss()
            if s3 is not None and r.status_code == 200:
                result.update(s3.report(instance_size))

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
            result["peak_rss_mib"] = peak_rss()
            if s3 is not None:
                result["moto_peak_rss_mib"] = round(peak_rss_mib(s3.pid), 1)
    finally:
        server.stop()
        if s3 is not None:
            s3.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=1))
    ok = result.get("byte_identical") is True and float(str(result["peak_rss_mib"])) < 300
    if s3 is not None:
        ok = ok and result.get("s3_parts") == result.get("s3_parts_expected")
        ok = ok and result.get("s3_open_uploads") == 0
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
