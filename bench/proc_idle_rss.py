"""Idle memory of a processing node after a burst of 12-megapixel jobs (glibc arenas, ``malloc_trim``).

For each variant this starts a local cluster in a temp folder: 1 manager, 1 upload node,
1 storage node, and 1 processing node with ``--workers`` slots. Then it:

1. reads the processing node's RSS once it is registered and idle (``before``);
2. uploads ``--photos`` 12-MP JPEGs (4000 x 3000) at once with ``pixelfox put`` and waits
   until every one is ready;
3. waits ``--idle-s`` seconds with no job and reads the RSS again (``after``), and the
   resident peak (``VmHWM``, ``peak``).

All figures come from ``/proc/PID/status`` of the node process, in MiB. The variants differ
only in the processing node's environment:

* ``shipped``: as ``pixelfox up`` starts it: ``malloc_trim`` after 1 s idle
  (``PIXELFOX_TRIM_IDLE_S``) and ``MALLOC_ARENA_MAX=2`` (``launcher.PROC_MALLOC_ARENA_MAX``);
* ``no-trim``: ``PIXELFOX_TRIM_IDLE_S=0`` (the node never trims), 2 arenas;
* ``glibc-arenas``: the trim, with glibc's default arena limit (8 per core);
* ``neither``: no trim and glibc's arenas (the node before the trim).

Run (not in CI; about 30-60 s per variant on 2 cores)::

    .venv/bin/python bench/proc_idle_rss.py                                  # all four, 10 photos
    .venv/bin/python bench/proc_idle_rss.py --variants neither shipped --rounds 3
    .venv/bin/python bench/proc_idle_rss.py --corpus   # photos made from the corpus' camera photos

The generated photos are gradient plus noise (``tests.jobtools.make_photo``); ``--corpus``
uses the corpus' camera photos scaled to 12 MP (``bench.capacity.real_photos``). The figures
go in ``docs/benchmarks.md``, under "Processing node: idle memory after a burst".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.capacity import real_photos  # noqa: E402
from tests.jobtools import make_photo, put_json, start_with_proc, status_mb, wait_final  # noqa: E402

GLIBC_ARENAS = str(8 * (os.cpu_count() or 1))  # glibc's default arena limit on 64-bit
VARIANTS: dict[str, dict[str, str]] = {
    "shipped": {},
    "no-trim": {"PIXELFOX_TRIM_IDLE_S": "0"},
    "glibc-arenas": {"MALLOC_ARENA_MAX": GLIBC_ARENAS},
    "neither": {"PIXELFOX_TRIM_IDLE_S": "0", "MALLOC_ARENA_MAX": GLIBC_ARENAS},
}


def measure(root: Path, photos: list[Path], workers: int, proc_env: dict[str, str],
            idle_s: float) -> dict[str, float]:
    """One burst on a fresh cluster: RSS ``before``, ``peak`` and ``after`` (MiB), ``burst_s`` (seconds from
    the upload to the last image ready) and ``ready`` (how many images became ready)."""
    local, key, pid = start_with_proc(root, workers, proc_env)
    try:
        time.sleep(1.0)  # the node's start-up allocations settle
        before = status_mb(pid)
        t = time.monotonic()
        slugs = [r["id"] for r in put_json(local.root, *photos, timeout=900) if r.get("id")]
        ready = sum(wait_final(local, key, slug, timeout_s=600).get("status") == "ready" for slug in slugs)
        burst_s = time.monotonic() - t
        time.sleep(idle_s)
        return {"before": before, "peak": status_mb(pid, "VmHWM"), "after": status_mb(pid),
                "burst_s": burst_s, "ready": ready}
    finally:
        local.stop(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=10, help="12-MP JPEGs per burst (default 10)")
    ap.add_argument("--workers", type=int, default=2, help="slots of the processing node (default 2)")
    ap.add_argument("--idle-s", type=float, default=3.0, help="idle wait before the last reading (default 3 s)")
    ap.add_argument("--rounds", type=int, default=1, help="bursts per variant, each on a fresh cluster")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--corpus", action="store_true", help="photos from the corpus' camera photos, not generated")
    opts = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="pixelfox-idle-rss-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        photos = (real_photos(folder, opts.photos) if opts.corpus else
                  [make_photo(folder / f"p12mp_{i}.jpg", 4000, 3000, seed=700 + i) for i in range(opts.photos)])
        mean_mb = statistics.mean(p.stat().st_size for p in photos) / 2**20
        print(f"{len(photos)} photos of 4000 x 3000 ({mean_mb:.1f} MiB each), {opts.workers} workers, "
              f"idle wait {opts.idle_s:g} s, load {os.getloadavg()[0]:.1f}", flush=True)
        print("| variant | round | RSS before | peak (VmHWM) | RSS after idle | after - before | burst | ready |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in range(1, opts.rounds + 1):
            for name in opts.variants:  # interleaved: a noisy neighbour hits every variant alike
                m = measure(Path(tmp) / f"{name}-{r}", photos, opts.workers, VARIANTS[name], opts.idle_s)
                print(f"| {name} | {r} | {m['before']:.0f} MiB | {m['peak']:.0f} MiB | {m['after']:.0f} MiB | "
                      f"{m['after'] - m['before']:+.0f} MiB | {m['burst_s']:.1f} s | {m['ready']:.0f}/{len(photos)} |",
                      flush=True)


if __name__ == "__main__":
    main()
