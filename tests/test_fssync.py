"""The shared syncfs: writers share rounds, never one that started before they came,
and a failed round fails every writer that waited for it. The batch committer: one
sync for what queued meanwhile, a failing blob fails alone, close loses nothing."""

from __future__ import annotations

import asyncio
import errno
import functools
import threading
import time
from pathlib import Path

import pytest

from service.storage import fssync
from service.storage.fssync import MIN_KERNEL, BatchCommitter, FilesystemSync


class _Recorder:
    """A syncfs that takes ``seconds`` and records when each call started and ended."""

    def __init__(self, seconds: float = 0.0, fail: frozenset[int] = frozenset()) -> None:
        self.seconds = seconds
        self.fail = fail  # the calls (1-based) that raise EIO
        self.calls: list[tuple[float, float]] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, fd: int) -> None:
        start = time.monotonic()
        self.started.set()
        self.release.wait(10)
        time.sleep(self.seconds)
        self.calls.append((start, time.monotonic()))
        if len(self.calls) in self.fail:
            raise OSError(errno.EIO, "write-back failed")


def _in_threads(sync: FilesystemSync, count: int) -> list[BaseException | float]:
    """Call ``sync.wait`` from ``count`` threads at once: when each returned, or its error."""
    results: list[BaseException | float] = [0.0] * count
    gate = threading.Barrier(count)

    def run(index: int) -> None:
        gate.wait()
        try:
            sync.wait()
            results[index] = time.monotonic()
        except OSError as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_concurrent_writers_share_rounds(tmp_path: Path) -> None:
    recorder = _Recorder(seconds=0.05)
    sync = FilesystemSync(tmp_path, recorder)
    results = _in_threads(sync, 16)
    sync.close()
    assert all(isinstance(r, float) for r in results)
    # The first caller's round, then at most one more for everyone who came meanwhile.
    assert 1 <= len(recorder.calls) <= 2


def test_a_writer_arriving_during_a_round_waits_for_the_next(tmp_path: Path) -> None:
    recorder = _Recorder()
    recorder.release.clear()
    sync = FilesystemSync(tmp_path, recorder)
    first = threading.Thread(target=sync.wait)
    first.start()
    assert recorder.started.wait(5)  # round 1 is running, held on release
    returned: list[float] = []
    second = threading.Thread(target=lambda: (sync.wait(), returned.append(time.monotonic())))
    second.start()
    time.sleep(0.05)
    recorder.release.set()
    first.join(5)
    second.join(5)
    sync.close()
    # Round 1 began before the second writer's data was written: it needs round 2.
    assert len(recorder.calls) == 2
    assert returned and returned[0] >= recorder.calls[1][1]


def test_a_failed_round_fails_its_writers_and_the_next_round_runs(tmp_path: Path) -> None:
    recorder = _Recorder(seconds=0.05, fail=frozenset({1}))
    sync = FilesystemSync(tmp_path, recorder)
    with pytest.raises(OSError) as raised:
        sync.wait()
    assert raised.value.errno == errno.EIO
    sync.wait()  # a new round, which succeeds
    assert len(recorder.calls) == 2
    sync.close()


def test_every_writer_of_a_failed_round_gets_the_error(tmp_path: Path) -> None:
    recorder = _Recorder(fail=frozenset({1, 2}))
    recorder.release.clear()
    sync = FilesystemSync(tmp_path, recorder)
    first: list[BaseException] = []

    def run_first() -> None:
        try:
            sync.wait()
        except OSError as exc:
            first.append(exc)

    leader = threading.Thread(target=run_first)
    leader.start()
    assert recorder.started.wait(5)
    # Two writers join round 2 while round 1 runs; round 2 fails too.
    followers: list[BaseException | float] = []
    threads = [
        threading.Thread(target=lambda: followers.extend(_in_threads(sync, 1))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    recorder.release.set()
    leader.join(5)
    for thread in threads:
        thread.join(5)
    sync.close()
    assert len(recorder.calls) == 2
    assert [getattr(e, "errno", None) for e in first] == [errno.EIO]
    assert [getattr(e, "errno", None) for e in followers] == [errno.EIO, errno.EIO]


def test_kernels_older_than_5_8_are_not_trusted() -> None:
    assert fssync._kernel("5.4.0-150-generic") < MIN_KERNEL
    assert fssync._kernel("5.8.0") >= MIN_KERNEL
    assert fssync._kernel("6.18.44-fc-v1272") >= MIN_KERNEL
    assert fssync._kernel("weird") < MIN_KERNEL


@pytest.mark.skipif(not fssync.syncfs_available(), reason="needs Linux 5.8+ syncfs")
def test_the_real_syncfs(tmp_path: Path) -> None:
    sync = fssync.filesystem_sync(tmp_path)
    assert sync is not None
    (tmp_path / "file").write_bytes(b"data")
    results = _in_threads(sync, 4)
    sync.close()
    assert all(isinstance(r, float) for r in results)


async def test_a_batch_commit_fails_only_the_place_that_failed(tmp_path: Path) -> None:
    recorder = _Recorder()
    recorder.release.clear()  # hold the first round so the next jobs queue up together
    committer = BatchCommitter(FilesystemSync(tmp_path, recorder), "test")
    placed: list[int] = []

    def place(n: int) -> None:
        if n == 2:
            raise OSError(errno.ENOSPC, "full")
        placed.append(n)

    first = committer.submit(lambda: place(0))
    assert await asyncio.to_thread(recorder.started.wait, 5)
    futures = [committer.submit(functools.partial(place, n)) for n in (1, 2, 3)]
    recorder.release.set()
    await asyncio.wait_for(first, 5)
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], OSError)
    assert results[1].errno == errno.ENOSPC
    assert placed == [0, 1, 3]
    assert len(recorder.calls) == 2  # the first job's round, then one for the batch
    committer.close()


async def test_a_failed_sync_fails_every_placed_blob_of_its_batch(tmp_path: Path) -> None:
    committer = BatchCommitter(FilesystemSync(tmp_path, _Recorder(fail=frozenset({1}))), "t")
    with pytest.raises(OSError) as failed:
        await asyncio.wait_for(committer.submit(lambda: None), 5)
    assert failed.value.errno == errno.EIO
    # the next batch goes on
    assert await asyncio.wait_for(committer.submit(lambda: None), 5) is None
    committer.close()


async def test_close_finishes_what_is_queued_and_refuses_more(tmp_path: Path) -> None:
    recorder = _Recorder(seconds=0.02)
    committer = BatchCommitter(FilesystemSync(tmp_path, recorder), "test")
    futures = [committer.submit(lambda: None) for _ in range(5)]
    committer.close()
    assert await asyncio.wait_for(asyncio.gather(*futures), 5) == [None] * 5
    with pytest.raises(RuntimeError, match="closed"):
        committer.submit(lambda: None)


async def test_a_caller_that_stops_waiting_does_not_stop_the_committer(tmp_path: Path) -> None:
    """A cancelled caller's answer is dropped, and the thread goes on committing."""
    recorder = _Recorder()
    recorder.release.clear()
    committer = BatchCommitter(FilesystemSync(tmp_path, recorder), "test")
    placed: list[int] = []
    waiting = asyncio.ensure_future(committer.submit(lambda: placed.append(1)))
    assert await asyncio.to_thread(recorder.started.wait, 5)
    waiting.cancel()
    recorder.release.set()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.wait_for(committer.submit(lambda: placed.append(2)), 5) is None
    assert placed == [1, 2]
    committer.close()


_MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
30 22 0:40 / /mnt/my\\040data rw,nosuid - fuse.sshfs host:/ rw
31 22 0:41 / /mnt rw - nfs4 srv:/export rw
32 22 0:42 / /srv/blobs rw - xfs /dev/vdb rw
33 22 0:43 / /srv/blobs rw - tmpfs tmpfs rw
"""


def test_the_filesystem_of_a_folder_is_its_deepest_mount() -> None:
    def kind(path: str) -> str | None:
        return fssync.filesystem_type(Path(path), _MOUNTINFO)

    assert kind("/mnt/my data/blobs") == "fuse.sshfs"  # an escaped space
    assert kind("/mnt/other") == "nfs4"
    assert kind("/mnt") == "nfs4"
    assert kind("/mntx") == "ext4"  # a prefix of the name is not a parent folder
    assert kind("/srv/blobs/a") == "tmpfs"  # the later mount on the same point is on top
    assert fssync.filesystem_type(Path("/x"), "garbage\n") is None


def test_syncfs_is_not_trusted_on_other_filesystems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fssync, "filesystem_type", lambda folder: "fuse.sshfs")
    assert fssync.filesystem_sync(tmp_path) is None
    monkeypatch.setattr(fssync, "filesystem_type", lambda folder: "ext4")
    sync = fssync.filesystem_sync(tmp_path)
    assert (sync is not None) == fssync.syncfs_available()
    if sync is not None:
        sync.close()
