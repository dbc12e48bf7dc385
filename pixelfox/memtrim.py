"""Hand freed heap memory back to the kernel: glibc's ``malloc_trim``.

The GNU C Library manual, "The GNU Allocator"
(https://www.gnu.org/software/libc/manual/html_node/The-GNU-Allocator.html), describes how
glibc malloc keeps several heaps, called arenas, so that threads can allocate at the same time.
Memory that is freed inside an arena stays with that arena, ready for later allocations. A
processing node decodes 12-megapixel images on several threads, so after a burst each thread's
arena holds tens of MB of free chunks, and the node's RSS stays near its peak while it is idle.
``MALLOC_ARENA_MAX`` (the manual's "Malloc Tunable Parameters", ``M_ARENA_MAX``) limits
how many arenas there are, but it does not make an arena smaller.

``malloc_trim(pad)`` is a GNU extension. It is not in that manual; the Linux man page
malloc_trim(3) describes it. Since glibc 2.8 it releases every whole free page of the free chunks
in all arenas (``madvise(MADV_DONTNEED)``), and the top of the main heap (``sbrk``). It does not
release the free top of a thread arena's heap (glibc's ``mtrim``), which can be tens of MB
after large buffers were freed. That is why ``pixelfox up`` starts processing nodes with
``MALLOC_ARENA_MAX=2`` (docs/benchmarks.md). It returns 1 when it released something and 0
when it did not.

The call locks each arena in turn, and its time grows with the size of the heap (milliseconds
for a few hundred MB). Call it while the process is idle, and not on the event loop. Other C
libraries (musl, macOS) have no ``malloc_trim``. There :func:`trim` does nothing and logs that at
debug level.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``int malloc_trim(size_t pad)``, or None when the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def available() -> bool:
    """Whether this process' C library has ``malloc_trim`` (glibc does; musl and macOS do not)."""
    return _malloc_trim() is not None


def trim() -> bool:
    """Give the freed heap memory of every malloc arena back to the kernel (``malloc_trim(0)``).

    Returns True when glibc released some memory and False when it had nothing to release or
    when the C library has no ``malloc_trim`` (a no-op, logged at debug level). This call
    blocks for as long as the trim takes (milliseconds for a heap of a few hundred MB). From
    async code, run it with ``asyncio.to_thread``. It never raises.
    """
    fn = _malloc_trim()
    if fn is None:
        logger.debug("malloc_trim is not available (C library is not glibc): memory is not trimmed")
        return False
    return bool(fn(0))
