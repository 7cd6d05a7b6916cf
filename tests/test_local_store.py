"""What the local BlobStore promises beyond the shared contract: every byte written
however the kernel splits the writes, and folders that survive a crash with the blobs
in them, whether each file is fsynced or one syncfs serves many."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import anyio
import pytest

from service.config import ConfigError, load_settings
from service.context import _open_storage
from service.storage import fssync, local
from service.storage.fssync import syncfs_available
from service.storage.local import LocalBlobStore


async def _read(store: LocalBlobStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(key)])


async def test_short_writes_and_more_buffers_than_iov_max_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_writev = os.writev
    calls = []

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        # At most 1000 bytes a call, ending inside a buffer: the caller must go on.
        calls.append(len(buffers))
        budget, taken = 1000, []
        for buffer in buffers:
            taken.append(buffer[:budget])
            budget -= len(taken[-1])
            if not budget:
                break
        return real_writev(fd, taken)

    monkeypatch.setattr(local.os, "writev", short_writev)
    chunks = [bytes([n % 251]) * (n % 7) for n in range(3000)]  # empty ones too
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    writer = await store.open_writer("study/series/one.dcm")
    for chunk in chunks:
        await writer.write(chunk)
    await writer.commit()

    assert await _read(store, "study/series/one.dcm") == b"".join(chunks)
    assert max(calls) <= 1024  # never more buffers than the kernel takes


async def test_new_folders_are_synced_into_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real_fsync_dir = local._fsync_dir

    def recording(path: Path) -> None:
        synced.append(Path(path))
        real_fsync_dir(path)

    monkeypatch.setattr(local, "_fsync_dir", recording)
    store = LocalBlobStore(tmp_path / "blobs", shared_sync=False)
    await store.open()
    root = store.root

    writer = await store.open_writer("a/b/c/first.dcm")
    await writer.write(b"first")
    await writer.commit()
    # Each new folder's entry is made durable in its parent, and the blob's in its own.
    assert synced == [root, root / "a", root / "a" / "b", root / "a" / "b" / "c"]

    synced.clear()
    writer = await store.open_writer("a/b/c/second.dcm")
    await writer.write(b"second")
    await writer.commit()
    assert synced == [root / "a" / "b" / "c"]  # an existing folder: only the rename
    assert await _read(store, "a/b/c/first.dcm") == b"first"
    assert await _read(store, "a/b/c/second.dcm") == b"second"


async def test_a_writer_that_need_not_be_durable_syncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[object] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(local.os, "fsync", recording)
    store = LocalBlobStore(tmp_path / "blobs", shared_sync=False)
    await store.open()
    for key, data in (("cache/a/doc", b"first"), ("cache/a/doc", b"second")):
        writer = await store.open_writer(key, durable=False)
        await writer.write(data)
        await writer.commit()
    assert synced == []  # neither the files, nor the new folders, nor the renames
    assert await _read(store, "cache/a/doc") == b"second"
    assert not list((store.root / "cache" / "a").glob(".*"))  # no temporary file left
    writer = await store.open_writer("cache/a/durable")
    await writer.write(b"durable")
    await writer.commit()
    assert len(synced) == 2  # the file, then its folder


async def test_a_folder_made_by_a_concurrent_writer_is_still_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs", shared_sync=False)
    await store.open()
    synced: list[Path] = []
    real_mkdir = Path.mkdir

    def racing_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self, exist_ok=True)  # the other writer got there first
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    monkeypatch.setattr(local, "_fsync_dir", lambda path: synced.append(Path(path)))
    writer = await store.open_writer("x/y.dcm")
    await writer.write(b"y")
    await writer.commit()
    assert synced == [store.root, store.root / "x"]


async def test_a_blob_being_renamed_is_never_taken_for_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between its fsync and its rename, another process looks at our temporary file
    # (a delete of the key, a second writer of it): our lock must still be held, so
    # the file is left alone and the commit lands.
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    beside = store.root / "a" / ".one.dcm.part"
    real_replace = os.replace
    verdicts: list[bool] = []

    def look_then_replace(src: str | Path, dst: str | Path) -> None:
        verdicts.append(local._remove_if_abandoned(beside))
        real_replace(src, dst)

    monkeypatch.setattr(local.os, "replace", look_then_replace)
    writer = await store.open_writer("a/one.dcm")
    await writer.write(b"kept")
    await writer.commit()

    assert verdicts == [False]  # alive: not removed
    assert await _read(store, "a/one.dcm") == b"kept"
    assert not beside.exists()


async def test_what_a_dead_writer_left_is_cleared(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    folder = store.root / "s"
    folder.mkdir()
    # Unlocked temporary files: their writers died mid-upload.
    (folder / ".one.dcm.part").write_bytes(b"torn")
    (folder / ".two.dcm.part").write_bytes(b"torn")
    (store.root / ".tmp" / "x.part").write_bytes(b"torn")

    writer = await store.open_writer("s/one.dcm")  # the next write of the key
    await writer.write(b"one")
    await writer.commit()
    await store.delete("s/two.dcm")  # recovery deleting an unfinished upload's key
    await LocalBlobStore(tmp_path / "blobs").open()  # a restart

    assert await _read(store, "s/one.dcm") == b"one"
    assert sorted(p.name for p in folder.iterdir()) == ["one.dcm"]
    assert list((store.root / ".tmp").iterdir()) == []


async def test_two_writers_of_one_key_last_commit_wins(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    first = await store.open_writer("k/blob.dcm")
    second = await store.open_writer("k/blob.dcm")
    big = b"1" * local.WRITE_BUFFER  # goes to disk now: the first holds the name
    await first.write(big)
    await second.write(b"2" * local.WRITE_BUFFER)  # falls back to .tmp
    await second.commit()
    assert await _read(store, "k/blob.dcm") == b"2" * local.WRITE_BUFFER
    await first.commit()
    assert await _read(store, "k/blob.dcm") == big
    assert sorted(p.name for p in (store.root / "k").iterdir()) == ["blob.dcm"]
    assert list((store.root / ".tmp").iterdir()) == []


async def test_a_file_cleared_before_its_writer_locked_it_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process can open our new temporary file before we lock it, find it
    # unlocked and unlink it. The writer must notice and start again.
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    beside = store.root / "s" / ".one.dcm.part"
    real_flock = local.fcntl.flock
    raced: list[Path] = []

    def flock_after_a_clean_up(fd: int, operation: int) -> None:
        if operation == local.fcntl.LOCK_EX and not raced:
            raced.append(beside)
            assert local._remove_if_abandoned(beside)
        real_flock(fd, operation)

    monkeypatch.setattr(local.fcntl, "flock", flock_after_a_clean_up)
    writer = await store.open_writer("s/one.dcm")
    await writer.write(b"one")
    await writer.commit()
    assert raced == [beside]
    assert await _read(store, "s/one.dcm") == b"one"


@pytest.mark.skipif(not syncfs_available(), reason="needs Linux 5.8+ syncfs")
async def test_with_syncfs_a_commit_waits_for_one_shared_sync_and_fsyncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsynced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(local.os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd)))
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    shared = store._shared
    assert shared is not None
    rounds: list[int] = []
    real_syncfs = shared._syncfs

    def counting(fd: int) -> None:
        rounds.append(fd)
        real_syncfs(fd)

    monkeypatch.setattr(shared, "_syncfs", counting)
    writer = await store.open_writer("a/b/first.dcm")  # new folders too
    await writer.write(b"first")
    await writer.commit()
    assert len(rounds) == 1  # commit returned after a sync of its own
    cache = await store.open_writer("a/b/cache", durable=False)
    await cache.write(b"cached")
    await cache.commit()
    assert len(rounds) == 1  # a writer that need not be durable waits for nothing
    assert fsynced == []
    assert await _read(store, "a/b/first.dcm") == b"first"
    assert await _read(store, "a/b/cache") == b"cached"
    await store.close()


@pytest.mark.skipif(not syncfs_available(), reason="needs Linux 5.8+ syncfs")
async def test_a_failed_syncfs_fails_the_commit_and_the_store_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    assert store._shared is not None

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "write-back failed")

    monkeypatch.setattr(store._shared, "_syncfs", failing)
    writer = await store.open_writer("a/lost.dcm")
    await writer.write(b"lost")
    with pytest.raises(OSError) as raised:
        await writer.commit()
    assert raised.value.errno == errno.EIO  # the caller does not commit its index row
    assert (store.root / "a" / "lost.dcm").exists()  # in place, but not durable
    await writer.abort()  # what the store path does with a failed commit
    assert not (store.root / "a" / "lost.dcm").exists()
    monkeypatch.undo()
    writer = await store.open_writer("a/kept.dcm")
    await writer.write(b"kept")
    await writer.commit()
    assert await _read(store, "a/kept.dcm") == b"kept"
    await store.close()


def _slow_rounds(store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make each shared syncfs of ``store`` take 20 ms; the list gets one entry a round."""
    shared = store._shared
    assert shared is not None
    rounds: list[float] = []
    real_syncfs = shared._syncfs

    def slow(fd: int) -> None:
        time.sleep(0.02)
        real_syncfs(fd)
        rounds.append(time.monotonic())

    monkeypatch.setattr(shared, "_syncfs", slow)
    return rounds


@pytest.mark.skipif(not syncfs_available(), reason="needs Linux 5.8+ syncfs")
async def test_concurrent_commits_are_placed_in_batches_and_share_a_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    rounds = _slow_rounds(store, monkeypatch)

    async def store_one(n: int) -> None:
        writer = await store.open_writer(f"s/{n % 3}/{n}.dcm")
        await writer.write(b"%d" % n)
        await writer.commit()

    async with anyio.create_task_group() as tasks:
        for n in range(40):
            tasks.start_soon(store_one, n)
    # The first commit's round, then one or two for all that queued meanwhile.
    assert 1 <= len(rounds) <= 3
    for n in range(40):
        assert await _read(store, f"s/{n % 3}/{n}.dcm") == b"%d" % n
    await store.close()


@pytest.mark.skipif(not syncfs_available(), reason="needs Linux 5.8+ syncfs")
async def test_a_cancelled_commit_still_waits_until_its_blob_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    rounds = _slow_rounds(store, monkeypatch)
    writer = await store.open_writer("a/one.dcm")
    await writer.write(b"one")
    returned: list[float] = []

    async def commit() -> None:
        try:
            await writer.commit()
        finally:
            returned.append(time.monotonic())

    with anyio.move_on_after(0.005):  # cancelled while its round runs
        await commit()
    assert rounds and returned[0] >= rounds[0]  # it returned only after its sync
    assert await _read(store, "a/one.dcm") == b"one"
    await store.close()


@pytest.mark.skipif(not syncfs_available(), reason="needs Linux 5.8+ syncfs")
async def test_a_commit_after_the_store_closed_fails_rather_than_hangs(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    writer = await store.open_writer("a/late.dcm")
    await writer.write(b"late")
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await writer.commit()


async def test_the_setting_chooses_how_blobs_are_made_durable(tmp_path: Path) -> None:
    for value, batched in (("fsync", False), ("auto", True)):
        settings = load_settings(
            {"DICOMWEB_DATA_DIR": str(tmp_path / value), "DICOMWEB_LOCAL_SYNC": value}
        )
        store = await _open_storage(settings)
        assert isinstance(store, LocalBlobStore)
        trusted = syncfs_available() and fssync.filesystem_type(store.root) in (
            fssync.TRUSTED_FILESYSTEMS
        )
        assert store.batched == (batched and trusted)
        writer = await store.open_writer("a/one.dcm")
        await writer.write(b"one")
        await writer.commit()
        assert await _read(store, "a/one.dcm") == b"one"
        await store.close()
    with pytest.raises(ConfigError, match="local_sync"):
        load_settings({"DICOMWEB_LOCAL_SYNC": "never"})
