"""How many durable files a second the disk takes, written the way the blob store does.

Each file is written to a temporary name beside its final one and renamed within its
per-series folder (``service/storage/local.py``), for several threads at once, as
concurrent uploads do, and made durable in one of three ways:

* ``fsync``: each thread fsyncs its file and then its folder (the store's way where
  ``syncfs`` cannot be trusted);
* ``syncfs``: each thread writes and renames, then waits for a ``syncfs`` shared with
  the files written meanwhile;
* ``batched``: the threads hand their files to one committer thread that writes and
  renames every file queued meanwhile, then waits for one ``syncfs`` (the store's way
  on Linux 5.8+).

Compare with STOW's instances/s: when STOW is far below this, the disk is not what
limits it.

    python bench/durable_writes.py --folder /path/on/the/data/disk
    python bench/durable_writes.py --size 1500 --count 10000      # tiny instances
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from service.storage.fssync import BatchCommitter, FilesystemSync, filesystem_sync

MODES = ("fsync", "syncfs", "batched")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(
    folder: Path, count: int, size: int, threads: int, mode: str, shared: FilesystemSync | None
) -> tuple[float, float]:
    """Files per second, and CPU milliseconds per file (user plus system, all threads):
    ``count`` files of ``size`` bytes for ``threads`` threads, made durable the way
    ``mode`` says. The CPU figure is the floor of what storing an instance durably
    costs the service's blob threads."""
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    committer = BatchCommitter(shared, "bench") if mode == "batched" and shared else None

    def place(i: int) -> Path:
        series = folder / f"series{i // 50}"
        series.mkdir(exist_ok=True)
        part = series / f".{i}.dcm.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            if mode == "fsync":
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part, series / f"{i}.dcm")
        return series

    def one(i: int) -> None:
        if committer is not None:
            committer.submit(functools.partial(place, i)).result()
        elif shared is not None:
            place(i)
            shared.wait()
        else:
            _fsync(place(i))

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))
    spent = time.process_time() - cpu
    if committer is not None:
        committer.close()
    return count / (time.perf_counter() - started), 1000 * spent / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=512 * 1024)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    for threads in args.threads:
        for mode in MODES:
            work = Path(tempfile.mkdtemp(prefix="durable-", dir=args.folder))
            shared = filesystem_sync(work) if mode != "fsync" else None
            try:
                if mode != "fsync" and shared is None:
                    print(f"{threads:3d} threads, {mode}: no trustworthy syncfs here")
                    continue
                rate, cpu_ms = run(work, args.count, args.size, threads, mode, shared)
            finally:
                if shared is not None:
                    shared.close()
                shutil.rmtree(work, ignore_errors=True)
            print(
                f"{threads:3d} threads, {mode:7s}: {rate:8,.0f} files/s, "
                f"{rate * args.size / 1e6:8,.1f} MB/s {cpu_ms:6.2f} ms CPU per file "
                f"({args.count} x {args.size:,} bytes)"
            )


if __name__ == "__main__":
    main()
