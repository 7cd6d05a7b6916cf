"""Claims across processes sharing one data folder: start-up recovery clears only the
claims of processes that are gone."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.core.liveness import ProcessLocks
from tests.dicomgen import make_instance
from tests.dimse import SidecarProcess
from tests.helpers import BOUNDARY, stow_headers
from tests.server import ServerProcess

pytestmark = pytest.mark.timeout(120)

HOLDER = """
import sys, time
from pathlib import Path
from service.core.liveness import ProcessLocks
ProcessLocks(Path(sys.argv[1])).hold(sys.argv[2])
print("held", flush=True)
time.sleep(60)
"""


def test_a_process_is_alive_while_it_holds_its_lock(tmp_path: Path) -> None:
    folder = tmp_path / "live"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), "abc123"], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        locks = ProcessLocks(folder)
        assert locks.alive("abc123")
        assert not locks.alive("def456")  # never ran
        assert not locks.alive("../etc")  # not a token
    finally:
        holder.kill()
        holder.wait()
    assert not locks.alive("abc123")  # killed: the kernel dropped its lock
    assert not (folder / "abc123.lock").exists()
    mine = ProcessLocks(folder)
    mine.hold("beef")
    assert mine.alive("beef") and ProcessLocks(folder).alive("beef")
    mine.close()
    assert not ProcessLocks(folder).alive("beef")


def claims(data: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(data / "index.sqlite") as conn:
        return conn.execute("SELECT sop_uid, owner FROM claims").fetchall()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data").start()
    yield proc
    proc.stop()


def test_live_upload_claim_survives_another_process_start_up(
    http_server: ServerProcess, tmp_path: Path
) -> None:
    data = http_server.data_dir
    instance = make_instance(rows=256, cols=256)
    half = len(instance) // 2
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    go_on = threading.Event()

    def body() -> Iterator[bytes]:
        yield head + instance[:half]  # the header and some pixels: the claim is taken
        go_on.wait(60)
        yield instance[half:] + tail

    result: dict[str, httpx.Response] = {}

    def upload() -> None:
        result["response"] = httpx.post(
            http_server.root + "/studies", content=body(), headers=stow_headers(), timeout=60
        )

    uploader = threading.Thread(target=upload)
    uploader.start()
    deadline = time.monotonic() + 20
    while not claims(data) and time.monotonic() < deadline:
        time.sleep(0.05)
    [(sop, owner)] = claims(data)
    # a claim of a process that died mid-upload, with the file it left behind
    orphan = data / "blobs" / "default" / "orphan.dcm"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"orphan")
    with sqlite3.connect(data / "index.sqlite") as conn:
        conn.execute(
            "INSERT INTO claims VALUES ('default', '1.2.3', 'default/orphan.dcm', "
            "'0badc0ffee00-1', 0)"
        )
    sidecar = SidecarProcess(data).start()  # runs start-up recovery on the same index
    try:
        assert claims(data) == [(sop, owner)]  # the live upload's claim is kept
        assert not orphan.exists()  # the dead one is cleared
        go_on.set()
        uploader.join(60)
        assert result["response"].status_code == 200, result["response"].text
        assert claims(data) == []
        stored = list((data / "blobs").rglob(f"{sop}.dcm"))
        assert [p.read_bytes() for p in stored] == [instance]
    finally:
        go_on.set()
        sidecar.stop()


async def test_storage_start_up_keeps_temp_files_of_live_writers(tmp_path: Path) -> None:
    from service.storage.local import WRITE_BUFFER, LocalBlobStore

    first = LocalBlobStore(tmp_path / "blobs")
    await first.open()
    writer = await first.open_writer("default/a.dcm")  # a live upload, holding its lock
    data = b"x" * (WRITE_BUFFER + 10)  # past the buffer: its temporary file exists
    await writer.write(data)
    abandoned = tmp_path / "blobs" / ".tmp" / "crashed.part"  # no lock: its writer died
    abandoned.write_bytes(b"left over")
    second = LocalBlobStore(tmp_path / "blobs")
    await second.open()
    assert not abandoned.exists()
    live = tmp_path / "blobs" / "default" / ".a.dcm.part"  # beside its blob
    assert live.exists()
    await second.delete("default/a.dcm")  # nothing committed yet; the live file stays
    assert live.exists()
    await writer.commit()
    assert (tmp_path / "blobs" / "default" / "a.dcm").read_bytes() == data
