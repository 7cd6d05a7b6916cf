"""Group commit of durability for one local filesystem, with ``syncfs(2)``.

Two parts: :class:`FilesystemSync` shares ``syncfs`` calls among the threads that need
one, and :class:`BatchCommitter` gives the store one thread that puts every blob
committed meanwhile in place and then waits for one shared ``syncfs`` for them all.

Making a blob durable file by file takes two fsyncs: the file, then its folder (the
new name lives there). Each is a journal commit that its thread waits for, and each
thread that waits and wakes trades the GIL with the event loop. ``syncfs`` makes every
write already done on a filesystem durable at once: file data, new names and new
folders. So a writer puts its blob in place and then waits for one ``syncfs`` that
*started after* that; writers that arrive while a ``syncfs`` runs share the next one.
An acknowledged blob is exactly as durable as before; what is shared is the flush
(measured gain: docs/performance.md).

Putting a small blob in place is a handful of short system calls. From a worker thread
of its own each, the commits of many concurrent uploads cost a thread hop each and
trade the GIL with the event loop at every system call, among dozens of threads. The
:class:`BatchCommitter`'s single thread takes every commit queued while it worked,
places them one after the other, and waits for one ``syncfs``.

Only on Linux 5.8 and later (older kernels' ``syncfs`` returns success even when a
write-back failed, where ``fsync`` would have reported it), and only on the local
filesystems in :data:`TRUSTED_FILESYSTEMS`: on a FUSE mount, for one, ``syncfs`` may
return without the filesystem's server having stored anything, where ``fsync`` asks it
to. Elsewhere :func:`filesystem_sync` returns None and the store fsyncs each file.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import queue
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from service.batching import Answer, answer, take_batch

__all__ = [
    "BatchCommitter",
    "FilesystemSync",
    "filesystem_sync",
    "filesystem_type",
    "syncfs_available",
]

log = logging.getLogger(__name__)

#: Most commits one batch places before its syncfs: bounds the first one's wait.
MAX_BATCH = 64

#: The first kernel whose syncfs reports write-back errors (commit 735e4ae5ba28).
MIN_KERNEL = (5, 8)
#: Filesystems whose syncfs writes back every file's data and commits their metadata
#: (a journal or transaction commit). tmpfs keeps nothing across a crash either way.
TRUSTED_FILESYSTEMS = frozenset({"ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "tmpfs"})
MOUNTINFO = Path("/proc/self/mountinfo")


def _kernel(release: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _load_syncfs() -> Callable[[int], None] | None:
    if sys.platform != "linux" or _kernel(os.uname().release) < MIN_KERNEL:
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        # ctypes releases the GIL for the call: the event loop runs meanwhile.
        if function(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs: {os.strerror(code)}")

    return syncfs


_SYNCFS = _load_syncfs()


def syncfs_available() -> bool:
    """Whether this system has a ``syncfs`` that reports write-back errors."""
    return _SYNCFS is not None


class _Round:
    """One ``syncfs`` and the writers waiting for it."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: OSError | None = None


class FilesystemSync:
    """Shared ``syncfs`` calls for the filesystem holding ``folder`` (blocking; call
    :meth:`wait` from worker threads).

    At most one ``syncfs`` runs at a time. A caller joins the next round, the one not
    yet started; the first caller to find no round running starts it. A round that
    fails raises its error in every caller that waited for it.
    """

    def __init__(self, folder: Path, syncfs: Callable[[int], None]) -> None:
        self._syncfs = syncfs
        self._fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
        self._lock = threading.Condition()
        self._running = False
        self._next: _Round | None = None

    def wait(self) -> None:
        """Return once everything written before the call is durable."""
        with self._lock:
            mine = self._next = self._next or _Round()
            while not mine.done:
                if self._running:
                    self._lock.wait()
                    continue
                # No round is running, so ours is the one waiting to start: run it.
                self._running, self._next = True, None
                self._lock.release()
                try:
                    self._syncfs(self._fd)
                except OSError as exc:
                    mine.error = exc
                except BaseException:
                    mine.error = OSError(errno.EIO, "syncfs was interrupted")
                    raise
                finally:
                    self._lock.acquire()
                    mine.done, self._running = True, False
                    self._lock.notify_all()
        if mine.error is not None:
            # A new exception per caller: one object raised in several threads at once
            # would have its traceback rewritten under each of them.
            raise OSError(mine.error.errno, mine.error.strerror) from mine.error

    def close(self) -> None:
        os.close(self._fd)


def filesystem_type(folder: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem ``folder`` is on, from ``/proc/self/mountinfo``
    (``mountinfo``: its text, for tests); None when it cannot be told."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    path = os.path.realpath(folder)
    best, kind = "", None
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split(" ")
        if len(parts) < 5 or not rest:
            continue
        # Spaces and the like in a mount point are octal escapes (\040).
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), parts[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the last of equal mounts is on top
            best, kind = point, rest.split(" ")[0]
    return kind


def filesystem_sync(folder: Path) -> FilesystemSync | None:
    """A :class:`FilesystemSync` for ``folder``, or None where ``syncfs`` cannot be
    trusted (see the module docstring)."""
    if _SYNCFS is None or filesystem_type(folder) not in TRUSTED_FILESYSTEMS:
        return None
    return FilesystemSync(folder, _SYNCFS)


_Job = tuple[Callable[[], None], "asyncio.Future[None]"]


class BatchCommitter:
    """One thread that runs queued ``place`` calls, then one :meth:`FilesystemSync.wait`
    for all that succeeded, and only then answers them.

    A ``place`` that raises fails alone; a failed sync fails the whole batch (each
    caller gets its own ``OSError``). After :meth:`close`, :meth:`submit` raises
    ``RuntimeError`` rather than queue a job nobody would run.
    """

    def __init__(self, sync: FilesystemSync, name: str) -> None:
        self._sync = sync
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"blob-committer {name}")
        self._thread.daemon = True
        self._thread.start()

    def submit(self, place: Callable[[], None]) -> asyncio.Future[None]:
        """Queue ``place``; the future (of the running event loop) is done once its blob
        is in place and durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the blob store is closed")
            self._queue.put((place, future))
        return future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch, stopping = take_batch(self._queue, first, MAX_BATCH)
            try:
                answers = self._commit(batch)
            except BaseException as exc:  # never leave a caller waiting forever
                log.exception("blob commit batch failed")
                answers = [(future, False, exc) for _, future in batch]
            answer(answers)

    def _commit(self, batch: list[_Job]) -> list[Answer]:
        answers: list[Answer] = []
        placed = []
        for place, future in batch:
            try:
                place()
            except Exception as exc:
                answers.append((future, False, exc))
            else:
                placed.append(future)
        if not placed:
            return answers
        try:
            self._sync.wait()  # every blob placed above, at once
        except OSError as exc:
            answers += [(f, False, OSError(exc.errno, exc.strerror)) for f in placed]
        else:
            answers += [(f, True, None) for f in placed]
        return answers
