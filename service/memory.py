"""How a serving process asks the C library's allocator to hold memory.

glibc's malloc gives threads their own arenas, up to eight per core. Memory a thread
frees goes back to its arena, where only that arena's next allocations find it, so a
process whose thread pools take turns with large buffers (request bodies, 4 MiB file
reads) keeps a high-water mark per arena. Fewer arenas shared by all threads reuse
what was freed: on the default benchmark, two arenas took the service's peak RSS from
304–318 to 270–275 MiB with two workers (four runs each), with throughput within the
runs' noise (docs/performance.md). Orthanc offers the same knob (``MallocArenaMax``).
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["limit_malloc_arenas"]

log = logging.getLogger(__name__)

# From glibc's <malloc.h>.
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` for the threads started from now on;
    whether the C library took it. 0, or a C library without ``mallopt`` (musl takes
    and ignores it, macOS lacks it), leaves the allocator as it is."""
    if arenas <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    taken = bool(mallopt(_M_ARENA_MAX, arenas))
    if not taken:
        log.debug("the C library did not take M_ARENA_MAX=%d", arenas)
    return taken
