"""``pixelfox.memtrim``: glibc's ``malloc_trim`` through ctypes, on this process' own heap."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

import pytest

from pixelfox import memtrim

pytestmark = pytest.mark.skipif(not memtrim.available(), reason="the C library has no malloc_trim (not glibc)")

CHUNK = 64 * 1024  # under glibc's mmap threshold: taken from the arena, not mmap'd
CHUNKS = 2400  # 150 MiB


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_trim_gives_back_what_a_thread_freed_between_live_chunks() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    pinned: list[int] = []

    def burst() -> None:
        # in a thread of its own: its own arena, as the processing node's pool threads have
        chunks = []
        for _ in range(CHUNKS):
            chunks.append(libc.malloc(CHUNK))
            ctypes.memset(chunks[-1], 1, CHUNK)  # resident
            pinned.append(libc.malloc(64))  # a live neighbour: free() cannot give the chunk back
        for c in chunks:
            libc.free(c)

    before = rss_mib()
    t = threading.Thread(target=burst)
    t.start()
    t.join()
    held = rss_mib()
    try:
        assert held - before > 100, (before, held)  # free() kept it
        assert memtrim.trim() is True
        assert rss_mib() - before < 30, (before, held, rss_mib())
    finally:
        for p in pinned:
            libc.free(p)

