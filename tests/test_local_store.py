"""What the local BlobStore promises beyond the shared contract: every byte written
however the kernel splits the writes, and folders that survive a crash with the blobs
in them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.storage import local
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
    store = LocalBlobStore(tmp_path / "blobs")
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


async def test_a_folder_made_by_a_concurrent_writer_is_still_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
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


async def test_a_blob_being_renamed_survives_another_process_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second worker opening the same store clears temporary files whose writer is
    # gone. Ours is mid-commit, between fsync and the rename into a new folder: its
    # lock must still be held, so the clean-up leaves it alone.
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    other = LocalBlobStore(tmp_path / "blobs")
    real_make_dirs = local._make_dirs
    cleared: list[Path] = []

    def other_process_starts(path: Path) -> None:
        leftovers = list(other._tmp.glob("*.part"))
        assert leftovers  # ours, about to be renamed
        for leftover in leftovers:
            local._remove_if_abandoned(leftover)
        cleared.extend(p for p in leftovers if not p.exists())
        real_make_dirs(path)

    monkeypatch.setattr(local, "_make_dirs", other_process_starts)
    writer = await store.open_writer("new/folder/blob.dcm")
    await writer.write(b"kept")
    await writer.commit()

    assert cleared == []
    assert await _read(store, "new/folder/blob.dcm") == b"kept"
    # A temporary file whose writer is gone is still cleared.
    (other._tmp / "dead.part").write_bytes(b"x")
    await other.open()
    assert list(other._tmp.glob("*.part")) == []
