"""Headless Chromium loading a page from a test origin, which reports back over HTTP.

The page is served by a small HTTP server on its own loopback port (so it is another
origin than the service under test); its script does its ``fetch()`` calls and POSTs
what it saw to ``/result`` on its own origin, which this harness hands to the test.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class PageServer:
    """Serves one HTML page at ``/`` and collects the JSON the page POSTs to /result."""

    def __init__(self, html: str) -> None:
        results: queue.Queue[Any] = queue.Queue()
        page = html.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                results.put(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.results = results
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def run_page(self, url: str, timeout: float = 60) -> Any:
        """Open ``url`` in headless Chromium; return what the page POSTed."""
        binary = chromium()
        assert binary, "chromium is not installed (make test installs it)"
        # Chromium's helper processes may still write to the profile as it stops.
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
            proc = subprocess.Popen(
                [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped as a whole
            )
            try:
                return self.results.get(timeout=timeout)
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
