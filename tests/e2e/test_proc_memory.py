"""An idle processing node gives the memory of its jobs back (``pixelfox.memtrim``, docs/operations.md).

glibc keeps what a job's threads freed in their malloc arenas. Without a trim, a node that
processed three 12-megapixel photos stayed 120 MiB (2 arenas) to 196 MiB (glibc's default arenas)
above where it started. With the trim, after ten photos, it ended 7 MiB (load 5) to 44 MiB
(load 15) above it (docs/benchmarks.md). The node calls ``malloc_trim`` after
``PIXELFOX_TRIM_IDLE_S`` (1 s) with no job, and ``pixelfox up`` starts it with
``MALLOC_ARENA_MAX=2``. This test runs a burst through a real cluster and reads the node's
``/proc/PID/status``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pixelfox import memtrim
from tests.jobtools import make_photo, put_json, start_with_proc, status_mb, wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PHOTOS = 3  # 12 MP each: an untrimmed node keeps well over the bound below (150+ MiB)
BOUND_MB = 100  # MiB over the start; measured: +7 to +44 with the trim (load 5-15), +120 to +240 without


@pytest.mark.skipif(not memtrim.available(), reason="the C library has no malloc_trim (not glibc)")
def test_idle_processing_node_returns_to_near_its_start_rss(tmp_path: Path) -> None:
    photos = [make_photo(tmp_path / f"p12mp_{i}.jpg", 4000, 3000, seed=900 + i) for i in range(PHOTOS)]
    local, key, pid = start_with_proc(tmp_path / "cluster", workers=2)
    try:
        before = status_mb(pid)
        results = put_json(local.root, *photos)
        slugs = [r["id"] for r in results if r.get("id")]
        assert len(slugs) == PHOTOS, results
        assert [wait_final(local, key, s)["status"] for s in slugs] == ["ready"] * PHOTOS
        peak = status_mb(pid, "VmHWM")
        # the jobs did grow the node (else this test proves nothing)
        assert peak - before > BOUND_MB, (before, peak)
        # the trim comes 1 s after the last job, in a thread: 5 s of idle is plenty on a loaded machine
        deadline = time.monotonic() + 5.0
        while (after := status_mb(pid)) - before >= BOUND_MB and time.monotonic() < deadline:
            time.sleep(0.1)
        assert after - before < BOUND_MB, f"idle RSS {after:.0f} MiB, {after - before:+.0f} MiB over the start " \
                                          f"({before:.0f} MiB; peak {peak:.0f} MiB)"
    finally:
        local.stop(10)
