"""A TCP proxy that can cut the line: a network fault between the service and S3.

Plain threads and sockets, no HTTP knowledge. ``cut_after(n)`` arms a trip wire: once
``n`` more bytes have gone upstream, every open connection is reset and new ones are
reset on arrival until :meth:`restore`, the way a dead endpoint looks to a client.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from tests.server import free_port

__all__ = ["TcpProxy"]


def _reset(sock: socket.socket) -> None:
    """Drop a connection at once: RST where the kernel can, and wake any blocked recv.

    ``close()`` alone would wait for a pump thread blocked in ``recv`` on the socket,
    leaving the peer hanging until its read timeout; ``shutdown`` acts immediately.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down = False
        self._trip_at: int | None = None
        self.upstream_bytes = 0
        self.cut_happened = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut_after(self, more_bytes: int) -> None:
        with self._lock:
            self._trip_at = self.upstream_bytes + more_bytes

    def cut(self) -> None:
        with self._lock:
            self._down = True
            self._trip_at = None
            doomed, self._open = self._open, set()
        for sock in doomed:
            _reset(sock)
        self.cut_happened.set()

    def restore(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                down = self._down
            if down:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if upstream:
                    with self._lock:
                        self.upstream_bytes += len(data)
                        tripped = self._trip_at is not None and self.upstream_bytes >= self._trip_at
                    if tripped:
                        self.cut()
                        return
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with self._lock:
                    self._open.discard(sock)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
