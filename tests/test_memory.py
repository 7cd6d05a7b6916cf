"""The cap on glibc's malloc arenas (``DICOMWEB_MALLOC_ARENAS``)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
from litestar.testing import TestClient

from service import app as app_module
from service.config import load_settings
from service.memory import limit_malloc_arenas

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")

# A process that starts eight threads, each holding a megabyte it allocated, and then
# counts the heaps (arenas) glibc reports through malloc_info().
_PROBE = """
import ctypes, sys, tempfile, threading
from service.memory import limit_malloc_arenas
if int(sys.argv[1]):
    assert limit_malloc_arenas(int(sys.argv[1]))
start, held = threading.Barrier(8), []
def hold():
    start.wait()  # all alive at once, so no thread inherits another's arena
    held.append(bytearray(1 << 20))
    start.wait()
threads = [threading.Thread(target=hold) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.fclose.argtypes = [ctypes.c_void_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
with tempfile.NamedTemporaryFile() as out:
    fp = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(open(out.name).read().count("<heap nr="))
"""


def _heaps(arenas: int) -> int:
    root = Path(__file__).parent.parent
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(arenas)],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        timeout=60,
    )
    return int(result.stdout)


@glibc
def test_threads_share_the_capped_arenas() -> None:
    assert _heaps(2) == 2
    # Without the cap, glibc gives the eight threads arenas of their own.
    assert _heaps(0) > 2


def test_zero_leaves_the_allocator_alone() -> None:
    assert limit_malloc_arenas(0) is False


def test_the_service_applies_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[int] = []
    monkeypatch.setattr(app_module, "limit_malloc_arenas", applied.append)
    settings = load_settings({"DICOMWEB_DATA_DIR": str(tmp_path), "DICOMWEB_MALLOC_ARENAS": "3"})
    with TestClient(app_module.create_app(settings)) as client:
        assert client.get("/health").status_code == 200
    assert applied == [3]


def test_a_negative_cap_is_refused() -> None:
    from service.config import ConfigError

    with pytest.raises(ConfigError, match="malloc_arenas"):
        load_settings({"DICOMWEB_MALLOC_ARENAS": "-1"})
