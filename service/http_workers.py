"""Several HTTP worker processes on one port, with the connections shared out evenly.

Python runs one core per process, so ``DICOMWEB_WORKERS`` processes serve one socket.
Left to themselves they share it badly: every idle worker is woken by a new
connection, and the first to run accepts every connection waiting. Clients that open
their connections together and keep them (viewers, the STOW CLI, a benchmark's 8
connections) then often all land on one worker, which does all the work while the
others idle: on 2 cores, tiny-instance STOW ran at 445-465 instances/s with all 8
connections on one worker, and at 630-640 with them split 4/4 or 5/3.

So each worker accepts for itself and publishes how many connections it holds on a
small shared board. A worker that holds more than the least busy live worker waits a
moment before it accepts (:data:`HOLD_PER_CONNECTION`, at most :data:`HOLD_MAX`), so
the less busy one, woken by the same connection, takes it; if that one does not (it
is busy, or gone), the connection is accepted anyway.

The supervising process binds the socket, starts the workers, restarts one that dies,
and on SIGINT or SIGTERM stops them all (each finishes its requests first, as uvicorn
does). A worker that fails at start-up stops the whole server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import multiprocessing
import os
import signal
import socket
import struct
import tempfile
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import uvicorn

__all__ = ["HOLD_MAX", "HOLD_PER_CONNECTION", "STALE_AFTER", "Board", "hold_for", "run_workers"]

log = logging.getLogger("service.http")

#: How long a worker with one connection more than the least busy worker waits
#: before accepting; the wait grows with the difference, up to :data:`HOLD_MAX`.
HOLD_PER_CONNECTION = 0.002
HOLD_MAX = 0.02
#: A worker that has not written its slot for this long is taken for gone.
STALE_AFTER = 2.0
_REFRESH = 0.5
# uvicorn's exit status for a failed start-up (the lifespan's start-up raised).
_STARTUP_FAILURE = 3


class Board:
    """Connection counts of a server's workers, one slot per worker, in a shared file.

    A slot is (pid, connections, time of writing on the monotonic clock, which all
    processes of one machine share). Each worker writes only its own slot, so no lock
    is needed: a read that races a write may see a torn slot, which misjudges at most
    one accept's wait, itself bounded by :data:`HOLD_MAX`. A slot not written for
    :data:`STALE_AFTER` is ignored (its worker hangs, or was killed before the
    supervisor could clear it).
    """

    _SLOT = struct.Struct("<iid")

    def __init__(self, path: Path, slots: int) -> None:
        self.path = path
        self.slots = slots
        self._index: int | None = None
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = self._SLOT.size * slots
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
            self._fd = fd
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def create(cls, slots: int) -> Board:
        """A new board for one server's workers: in ``/dev/shm`` where there is one (a
        board rewritten on every accept has no business being written back to a
        disk), else in the temporary folder."""
        shm = "/dev/shm"  # noqa: S108 (mkstemp: a new file, O_EXCL, mode 0600)
        folder = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
        fd, name = tempfile.mkstemp(prefix="dicomweb-http-", suffix=".board", dir=folder)
        os.close(fd)
        return cls(Path(name), slots)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def _read(self, index: int) -> tuple[int, int, float]:
        pid, connections, written = self._SLOT.unpack_from(self._map, index * self._SLOT.size)
        return int(pid), int(connections), float(written)

    def take(self, index: int) -> None:
        """Write to slot ``index`` from now on: the one the supervisor gave this worker."""
        self._index = index
        self.publish(0)

    def clear(self, index: int) -> None:
        """Empty slot ``index``, whose worker is gone (the supervisor saw it exit)."""
        self._SLOT.pack_into(self._map, index * self._SLOT.size, 0, 0, 0.0)

    def publish(self, connections: int) -> None:
        """Write this worker's connection count (and so show it is alive)."""
        if self._index is not None:
            self._SLOT.pack_into(
                self._map,
                self._index * self._SLOT.size,
                os.getpid(),
                connections,
                time.monotonic(),
            )

    def fewest_elsewhere(self) -> int | None:
        """The fewest connections a live worker other than this one holds."""
        now = time.monotonic()
        counts = []
        for index in range(self.slots):
            if index == self._index:
                continue
            pid, connections, written = self._read(index)
            if pid and now - written <= STALE_AFTER:
                counts.append(connections)
        return min(counts, default=None)


def hold_for(mine: int, fewest_elsewhere: int | None) -> float:
    """How long a worker holding ``mine`` connections waits before it accepts."""
    if fewest_elsewhere is None or mine <= fewest_elsewhere:
        return 0.0
    return min(HOLD_PER_CONNECTION * (mine - fewest_elsewhere), HOLD_MAX)


class BalancedServer(uvicorn.Server):
    """A uvicorn server that accepts connections itself, deferring to less busy
    workers on the same :class:`Board`."""

    def __init__(self, config: uvicorn.Config, board_path: Path, slots: int, slot: int) -> None:
        super().__init__(config)
        self._board_path = board_path
        self._slots = slots
        self._slot = slot
        self._tasks: list[asyncio.Task[None]] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # The lifespan starts and nothing listens: the accept loops below do.
        await super().startup(sockets=[])
        board = Board(self._board_path, self._slots)
        board.take(self._slot)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._refresh(board))]
        self._tasks += [loop.create_task(self._accept(sock, board)) for sock in sockets or []]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().shutdown(sockets)

    def _connections(self) -> int:
        return len(self.server_state.connections)

    async def _refresh(self, board: Board) -> None:
        # Connections close without telling the accept loop: the count is rewritten
        # now and then, which also shows the other workers that this one is alive.
        while True:
            board.publish(self._connections())
            await asyncio.sleep(_REFRESH)

    async def _accept(self, sock: socket.socket, board: Board) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        sock.setblocking(False)
        sock.listen(config.backlog)

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        while True:
            await _readable(loop, sock)
            mine = self._connections()
            board.publish(mine)
            hold = hold_for(mine, board.fewest_elsewhere())
            if hold:
                await asyncio.sleep(hold)
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another worker took it
            except OSError as exc:  # out of descriptors, or the like: try again shortly
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await loop.connect_accepted_socket(protocol, sock=conn, ssl=config.ssl)
            except OSError as exc:  # the client went away already
                log.debug("connection dropped before it was served: %s", exc)
                conn.close()
            board.publish(self._connections())


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def _worker(
    config: uvicorn.Config, sock: socket.socket, board_path: Path, slots: int, slot: int
) -> None:
    """A worker process: uvicorn's logging, then a :class:`BalancedServer`."""
    config.configure_logging()
    BalancedServer(config, board_path, slots, slot).run(sockets=[sock])


def run_workers(config: uvicorn.Config, workers: int) -> int:
    """Serve ``config``'s app from ``workers`` processes until SIGINT or SIGTERM;
    the exit status (3 when a worker failed to start)."""
    sock = config.bind_socket()
    board = Board.create(workers)
    spawn = multiprocessing.get_context("spawn")
    stop = threading.Event()
    status = 0

    def start(slot: int) -> BaseProcess:
        board.clear(slot)
        process = spawn.Process(target=_worker, args=(config, sock, board.path, workers, slot))
        process.start()
        log.info("started worker process %s", process.pid)
        return process

    def on_signal(*_: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start(slot) for slot in range(workers)]
    try:
        while not stop.wait(0.5):
            for index, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == _STARTUP_FAILURE:
                    log.error("worker process %s failed to start; stopping", process.pid)
                    status = _STARTUP_FAILURE
                    stop.set()
                    break
                log.warning(
                    "worker process %s exited with status %s; starting another",
                    process.pid,
                    process.exitcode,
                )
                processes[index] = start(index)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn's graceful shutdown
        for process in processes:
            process.join(config.timeout_graceful_shutdown or 30)
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        board.close()
        board.path.unlink(missing_ok=True)
    return status
