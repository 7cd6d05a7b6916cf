"""Local-file BlobStore, the embedded default.

A blob is written to a temporary file beside its final name (``.NAME.part`` in the same
folder; blob keys never start with a dot), then ``os.replace``d into place, and made
durable before ``commit`` returns. On Linux 5.8+ one thread (``fssync.BatchCommitter``)
puts in place every blob committed while it worked, then one ``syncfs`` makes them all
durable; elsewhere each commit runs in a worker thread of its own, which fsyncs the
file before its rename and its folder after it, so a crash leaves the old blob or the
new one.

With ``syncfs`` a crash before ``commit`` returns can leave a partial file under the
new name. That is safe because of how the store path uses keys: it never writes to a
key that a committed index row names (a replacement goes to a new key), the row is
written only after ``commit`` returns, and start-up recovery deletes the blob of an
upload whose claim was left behind. A ``syncfs`` that fails fails the commit, and the
writer's ``abort`` removes the file it had put in place.

Renaming within one folder is the cheapest durable commit the filesystem has: a shared
temporary folder made every upload contend on that one directory, and cost small
instances about a third more CPU (``bench/durable_writes.py``). All file I/O runs in
threads so the event loop keeps serving.

Several processes may share one store (the HTTP service, its workers, the DIMSE
sidecar). Each writer holds an ``flock`` on its temporary file until the rename, so a
leftover is removed only when its writer is gone (the kernel drops a dead process's
locks): by the next write or delete of the same key, or, for the fallback folder
``.tmp`` (two writers of one key at once), at start-up.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread

from service import offload
from service.errors import BackendUnavailable
from service.storage.base import BlobNotFound, BlobStore, BlobWriter, check_key
from service.storage.fssync import BatchCommitter, FilesystemSync, filesystem_sync

__all__ = ["LocalBlobStore"]

# Writes are gathered into buffers of this size before one thread hop: a thread hop per
# 64 KiB network chunk costs more than the write itself. Not larger: a blob smaller than
# this is written whole at commit by the store's one committer thread, which writes
# every blob of its batch one after the other. With 1 MiB that was every 512 KB
# instance; with 256 KiB most of their bytes are written as they arrive, in worker
# threads, and 6 of 7 interleaved runs of the default corpus stored faster (median 445
# against 418 instances/s, 3.55 against 3.73 ms of server CPU per instance, less system
# time).
WRITE_BUFFER = 256 * 1024
READ_CHUNK = 4 * 1024 * 1024


# The most buffers one os.writev takes (1024 on Linux).
_IOV_MAX = os.sysconf("SC_IOV_MAX")


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` in order with as few system calls as the kernel allows.

    One ``writev`` per buffer rather than one ``write`` per network chunk: each call
    drops and retakes the GIL, and under load retaking it means waiting for the event
    loop's thread.
    """
    views = [memoryview(c) for c in chunks if c]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        done = 0  # buffers written whole; a short write leaves part of the next
        while done < len(views) and written >= len(views[done]):
            written -= len(views[done])
            done += 1
        views = views[done:]
        if written:
            views[0] = views[0][written:]


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(folder: str | Path, durable: bool = True) -> None:
    """Create ``folder`` and its missing parents, durably unless told otherwise: a new
    folder's entry lives in its parent, so each parent that gained one is fsynced."""
    path = Path(folder)
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        # Made by a concurrent writer is fine too; its parent is synced here all the
        # same, as that writer may not have got to it yet.
        folder.mkdir(exist_ok=True)
        if durable:
            _fsync_dir(folder.parent)


class _LocalWriter(BlobWriter):
    """The temporary file is created with the first buffer that goes to disk, so a blob
    smaller than :data:`WRITE_BUFFER` (most instances of a small modality) is created,
    written and put in place in one step at commit: in the store's batch committer
    (then one shared syncfs makes it durable), or in a worker thread of its own, with
    an fsync of the file and of its folder. A writer that is not ``durable`` skips the
    syncs, and nothing else."""

    def __init__(
        self, final: str, tmp_dir: Path, durable: bool, committer: BatchCommitter | None
    ) -> None:
        # Paths are kept as str: building, formatting and taking apart pathlib paths
        # was a few percent of the event loop's time per small instance (py-spy).
        self._final = final
        self._tmp_dir = tmp_dir
        self._committer = committer if durable else None
        # Whether each file and folder is fsynced itself.
        self._fsync = durable and committer is None
        self._tmp: str | None = None
        # A raw descriptor: a Python file object would cost an fstat and an object,
        # and every system call here is a release and retake of the GIL.
        self._fd: int | None = None
        self._inode = 0
        # The file this writer renamed into place, until it is known durable: a commit
        # that fails after the rename removes it (see abort).
        self._placed: str | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._closed = False

    def _create(self) -> int:
        beside = _beside(self._final)
        while True:
            try:
                fd = os.open(beside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                name = beside
            except FileNotFoundError:
                # The first of its folder.
                _make_dirs(os.path.dirname(self._final), self._fsync)
                continue
            except FileExistsError:
                if _remove_if_abandoned(beside):
                    continue  # left by a writer that died
                # Another writer of the same key is at work: the last to commit wins.
                fd, name = tempfile.mkstemp(dir=self._tmp_dir, suffix=".part")
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another process may have taken the file for abandoned between its
            # creation and our lock, and unlinked it: then start again.
            status = os.fstat(fd)
            if status.st_nlink:
                break
            os.close(fd)
        self._tmp = name
        self._fd = fd
        self._inode = status.st_ino
        return fd

    def _write_sync(self, chunks: list[bytes]) -> int:
        fd = self._fd if self._fd is not None else self._create()
        _write_all(fd, chunks)
        return fd

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError("write after commit or abort")
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= WRITE_BUFFER:
            chunks, self._pending, self._pending_size = self._pending, [], 0
            await anyio.to_thread.run_sync(self._write_sync, chunks)

    async def commit(self) -> None:
        if self._closed:
            raise RuntimeError("commit after commit or abort")
        self._closed = True
        chunks, self._pending, self._pending_size = self._pending, [], 0
        if self._committer is None:
            await anyio.to_thread.run_sync(self._commit_sync, chunks)
            return
        future = self._committer.submit(functools.partial(self._place, chunks))
        # The caller must know whether the blob is durable, cancelled or not.
        with anyio.CancelScope(shield=True):
            await future
        self._placed = None

    def _commit_sync(self, chunks: list[bytes]) -> None:
        self._place(chunks)
        if self._fsync:
            _fsync_dir(os.path.dirname(self._final))
        self._placed = None

    def _place(self, chunks: list[bytes]) -> None:
        """Write what is pending and rename the file into place (fsynced first when
        each file is synced by itself)."""
        fd = self._write_sync(chunks)
        self._fd = None
        assert self._tmp is not None
        # The file stays open, and so locked, until it is renamed: closing it first
        # would let another process take it for abandoned and delete it under us.
        try:
            if self._fsync:
                os.fsync(fd)
            try:
                os.replace(self._tmp, self._final)
            except FileNotFoundError:
                # Only a fallback file in .tmp can meet a missing folder.
                _make_dirs(os.path.dirname(self._final), self._fsync)
                os.replace(self._tmp, self._final)
            self._tmp = None  # its name may be a new writer's from now on
            self._placed = self._final
        finally:
            os.close(fd)

    async def abort(self) -> None:
        self._closed = True
        self._pending = []
        if self._fd is not None or self._tmp is not None or self._placed is not None:
            await anyio.to_thread.run_sync(self._abort_sync)

    def _abort_sync(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        placed, self._placed = self._placed, None
        if placed is not None:
            # In place but not made durable (the sync failed): remove it, unless a
            # later writer of the key has replaced it since.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(placed).st_ino == self._inode:
                    os.unlink(placed)


def _beside(final: str) -> str:
    """Where the blob at ``final`` is written before its rename."""
    folder, name = os.path.split(final)
    return os.path.join(folder, f".{name}.part")


def _remove_if_abandoned(path: str | Path) -> bool:
    """Delete a temporary file whose writer is gone; whether it is gone now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its writer is alive
    else:
        # Still the file we locked? (It may have been committed, and the name taken
        # by a new writer, since we opened it.)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
        return True
    finally:
        os.close(fd)


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root``; keys are relative paths.

    ``shared_sync``: commit blobs in batches made durable by one shared ``syncfs``
    (True: where ``fssync.filesystem_sync`` trusts it, the default) or fsync each
    file and folder (False; ``DICOMWEB_LOCAL_SYNC=fsync``).
    """

    def __init__(self, root: str | Path, *, shared_sync: bool = True) -> None:
        self.root = Path(root).resolve()
        self._root = str(self.root)
        self._tmp = self.root / ".tmp"
        self._shared_sync = shared_sync
        self._shared: FilesystemSync | None = None
        self._committer: BatchCommitter | None = None

    @classmethod
    def from_url(cls, url: str, *, shared_sync: bool = True) -> LocalBlobStore:
        if not url.startswith("file://"):
            raise ValueError(f"not a file:// URL: {url!r}")
        return cls(url[len("file://") :], shared_sync=shared_sync)

    @property
    def batched(self) -> bool:
        """Whether commits go through the batch committer and a shared syncfs."""
        return self._committer is not None

    async def open(self) -> None:
        """Create the folders and drop temporary files left by a crash (not those a
        live process sharing the store is writing)."""

        def prepare() -> None:
            self._tmp.mkdir(parents=True, exist_ok=True)
            for leftover in self._tmp.glob("*.part"):
                _remove_if_abandoned(leftover)
            if self._shared_sync and self._shared is None:
                self._shared = filesystem_sync(self.root)
                if self._shared is not None:
                    self._committer = BatchCommitter(self._shared, str(self.root))

        await anyio.to_thread.run_sync(prepare)

    async def close(self) -> None:
        committer, self._committer = self._committer, None
        if committer is not None:
            await anyio.to_thread.run_sync(committer.close)
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.close()

    def _path(self, key: str) -> str:
        return os.path.join(self._root, check_key(key))

    async def open_writer(self, key: str, *, durable: bool = True) -> BlobWriter:
        return _LocalWriter(self._path(key), self._tmp, durable, self._committer)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)

        def first() -> tuple[int, int, bytes]:
            # Open, size and the first chunk in one thread hop: most instances are one
            # chunk, so retrieving one costs a single hop.
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise BlobNotFound(f"blob {key} is missing from storage") from None
            try:
                stop = os.fstat(fd).st_size if end is None else end
                return fd, stop, os.pread(fd, max(0, min(READ_CHUNK, stop - start)), start)
            except BaseException:
                os.close(fd)
                raise

        # Positional reads of a file are safe to abandon: offload's cheap hand-off.
        fd, stop, data = await offload.call(first)
        try:
            position = start
            while data:
                yield data
                position += len(data)
                if position >= stop:
                    break
                data = await offload.call(os.pread, fd, min(READ_CHUNK, stop - position), position)
        finally:
            os.close(fd)

    async def read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        path = self._path(key)

        def read() -> list[bytes]:
            # One thread hop and positional reads: the frame hot path.
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise BlobNotFound(f"blob {key} is missing from storage") from None
            try:
                return [os.pread(fd, length, offset) for offset, length in ranges]
            finally:
                os.close(fd)

        return await anyio.to_thread.run_sync(read)

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def delete() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            # And what a writer of this key that died left beside it (recovery
            # deletes the keys of unfinished uploads).
            _remove_if_abandoned(_beside(path))

        await anyio.to_thread.run_sync(delete)

    async def exists(self, key: str) -> bool:
        return await anyio.to_thread.run_sync(os.path.isfile, self._path(key))

    async def check(self) -> None:
        def probe() -> None:
            fd, name = tempfile.mkstemp(dir=self._tmp, suffix=".probe")
            os.close(fd)
            os.unlink(name)

        try:
            await anyio.to_thread.run_sync(probe)
        except OSError as exc:
            raise BackendUnavailable(
                f"local storage at {self.root} is not writable: {exc}"
            ) from exc
