"""Chaos: uploads through a running cluster while processing nodes and Redis are killed (issue 7).

Profiles (``PIXELFOX_CHAOS``):

* ``ci`` (default): 40 small generated photos, 3 processing nodes, a few minutes;
* ``long``: 300 uploads of the corpus' real photos (each made unique with a JPEG comment),
  run by hand: ``PIXELFOX_CHAOS=long .venv/bin/pytest -s tests/chaos``.

While the uploads run, a processing node holding a job (each job pauses 0.7 s at a failpoint)
is SIGKILLed every 3-5 s and started again, one node is SIGTERMed while it holds a job (a
deploy), and Redis (AOF on, ``appendfsync`` from ``PIXELFOX_CHAOS_FSYNC``, default ``always``)
is SIGKILLed and restarted once. The verdict is read from the public API only: every ``pixelfox put --json``
upload must end ``ready`` in ``GetImage`` with exactly one variant per name/format, and ``ListImages`` must
hold each upload exactly once. The figures - jobs interrupted mid-run (must be > 0, or the
kills proved nothing), kill-to-redispatch time and re-runs - come from the manager's log.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pixelfox.cli.launcher import Counts, LocalCluster
from tests.conftest import CORPUS, manifest_rows
from tests.jobtools import (
    log_text,
    make_photo,
    newest_images,
    put_retrying,
    start_cluster,
    variant_set_ok,
    wait_final,
)

PROFILE = os.environ.get("PIXELFOX_CHAOS", "ci")
N = 300 if PROFILE == "long" else int(os.environ.get("PIXELFOX_CHAOS_N", "40"))
FSYNC = os.environ.get("PIXELFOX_CHAOS_FSYNC", "always")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600 if PROFILE == "long" else 900)]

MANAGER_ENV = {
    "PIXELFOX_JOB_LEASE_S": "3", "PIXELFOX_LEASE_S": "6", "PIXELFOX_OUTBOX_INTERVAL_S": "2",
    "PIXELFOX_RETRY_BASE_S": "0.5", "PIXELFOX_RETRY_CAP_S": "4", "PIXELFOX_MAX_ATTEMPTS": "5",
    "PIXELFOX_MAX_LOST": "100",
}
# every job holds its processing node >= 0.7 s (a failpoint pause), so a kill lands inside a job
PROC_ENV = {"PIXELFOX_FAILPOINT": "before-process=sleep(700)"}
LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _files(folder: Path) -> list[Path]:
    if PROFILE != "long":
        return [make_photo(folder / f"chaos{i:03d}.jpg", 640, 480, seed=i) for i in range(N)]
    photos = [CORPUS / r["file"] for r in manifest_rows()
              if r["format"] == "JPEG" and r["expected_outcome"] == "accept"]
    out = []
    for i in range(N):
        data = photos[i % len(photos)].read_bytes()
        tag = f"pixelfox chaos {i}".encode()
        comment = b"\xff\xfe" + (len(tag) + 2).to_bytes(2, "big") + tag  # a JPEG COM segment: new bytes, same photo
        path = folder / f"chaos{i:03d}.jpg"
        path.write_bytes(data[:2] + comment + data[2:])
        out.append(path)
    return out


def _log_events(text: str) -> list[tuple[float, str]]:
    out = []
    for line in text.splitlines():
        m = LOG_TS.match(line)
        if m:
            ts = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp()
            out.append((ts, line))
    return out


class Chaos:
    """Kills processing nodes and Redis on a schedule; records what it did and when (unix time)."""

    def __init__(self, local: LocalCluster, seed: int = 7) -> None:
        self.local = local
        self.rng = random.Random(seed)
        self.kills: list[tuple[float, str]] = []
        self.sigterm: tuple[float, str] | None = None
        self.redis_kill: float | None = None
        self.stop = threading.Event()
        self.progress = 0.0  # share of uploads done, set by the test

    def _busy_proc(self) -> str | None:
        lines = re.findall(r"dispatch: job \S+ image \S+ .*-> (proc\d+)", log_text(self.local, "manager1"))
        return lines[-1] if lines else None

    def run(self) -> None:
        procs = [c.name for c in self.local.children if c.name.startswith("proc")]
        while not self.stop.wait(self.rng.uniform(3, 5)):
            if self.redis_kill is None and self.progress >= 0.5 and self.kills:  # a SIGKILL first, mid-upload
                self.redis_kill = time.time()
                self.local.restart("redis", sig=signal.SIGKILL)  # AOF replays on start
                continue
            if self.sigterm is None and self.progress >= 0.25 and self.kills and (busy := self._busy_proc()):
                self.sigterm = (time.time(), busy)
                self.local.restart(busy, sig=signal.SIGTERM)  # drains: finishes or hands back
                continue
            victim = self._busy_proc() or self.rng.choice(procs)
            self.kills.append((time.time(), victim))
            c = self.local.child(victim)
            os.kill(c.proc.pid, signal.SIGKILL)
            c.proc.wait()
            time.sleep(self.rng.uniform(0.5, 1.5))
            self.local.restart(victim)


def _redispatch_times(events: list[tuple[float, str]], kills: list[tuple[float, str]]) -> list[float]:
    """For each kill: seconds from the kill to the next dispatch of a job that was interrupted on that node."""
    out = []
    for t_kill, node in kills:
        for ts, line in events:
            if ts < t_kill - 0.05:
                continue
            m = re.search(rf"interrupted: job \S+ image (\S+) on {node} ", line)
            if not m:
                continue
            image = m.group(1)
            nxt = next((t for t, ln in events if t >= ts and f"image {image} " in ln and "dispatch:" in ln), None)
            if nxt is not None:
                out.append(nxt - t_kill)
            break
    return out


def test_chaos_every_upload_ends_ready_once(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    files = _files(tmp_path)
    local, key = start_cluster(tmp_path / "cluster", Counts(upload=1, proc=3, storage=2, web=0),
                               {"manager": MANAGER_ENV, "proc": PROC_ENV}, appendfsync=FSYNC)
    chaos = Chaos(local)
    thread = threading.Thread(target=chaos.run, daemon=True)
    started = time.time()
    try:
        thread.start()
        results: list[dict] = []
        batches = [files[i:i + 1] for i in range(len(files))]
        with ThreadPoolExecutor(3) as pool:
            for out in pool.map(lambda b: put_retrying(local.root, b[0], tries=8), batches):
                results.append(out)
                chaos.progress = len(results) / len(files)
        print(f"\nuploads done at {time.time() - started:.0f} s")
        # keep killing a little while the backlog drains, then let it converge
        deadline = time.time() + 20
        while time.time() < deadline and (chaos.redis_kill is None or chaos.sigterm is None
                                          or len(chaos.kills) < 2):
            chaos.progress = 1.0
            time.sleep(1)
        chaos.stop.set()
        thread.join(60)
        uploaded = [r for r in results if r.get("status") in ("processing", "ready")]
        final = {r["id"]: wait_final(local, key, r["id"], 300) for r in uploaded}
        listed = newest_images(local, key, 1000)
    finally:
        chaos.stop.set()
        text = log_text(local, "manager1")
        local.stop(10)
    elapsed = time.time() - started
    events = _log_events(text)
    interrupted = len(re.findall(r"interrupted: job", text))
    dispatches = len(re.findall(r"dispatch: job", text))
    fenced = len(re.findall(r"fenced: ignoring report", text))
    redispatch = _redispatch_times(events, chaos.kills)
    ready = [s for s, img in final.items() if img.get("status") == "ready"]
    bad_variants = [s for s in ready if not variant_set_ok(final[s])]
    rejected = [r for r in results if r.get("status") not in ("processing", "ready")]
    print(f"\nchaos profile {PROFILE}: {len(files)} files, {len(uploaded)} uploaded, {len(ready)} ready, "
          f"{len(rejected)} rejected after retries, in {elapsed:.0f} s (appendfsync {FSYNC})")
    term = f"{chaos.sigterm[1]} at {chaos.sigterm[0] - started:.0f} s" if chaos.sigterm else "none"
    kills = ", ".join(f"{n}@{t - started:.0f}s" for t, n in chaos.kills)
    print(f"proc SIGKILLs: {len(chaos.kills)} ({kills}); SIGTERM mid-job: {term}; Redis SIGKILLed and restarted at "
          f"{chaos.redis_kill and round(chaos.redis_kill - started)} s")
    print(f"jobs interrupted mid-run: {interrupted}; dispatches: {dispatches}; re-runs: "
          f"{dispatches - len(ready)}; fenced late reports: {fenced}")
    if redispatch:
        print(f"kill -> re-dispatch: median {statistics.median(redispatch):.2f} s, max {max(redispatch):.2f} s "
              f"over {len(redispatch)} kills that hit a job (job lease {MANAGER_ENV['PIXELFOX_JOB_LEASE_S']} s)")
    assert not rejected, rejected[:3]
    assert len(ready) == len(files), {s: i.get("status") for s, i in final.items() if i.get("status") != "ready"}
    assert not bad_variants, bad_variants[:3]
    listed_ids = [i["id"] for i in listed]
    assert len(listed_ids) == len(set(listed_ids)) == len(files)  # every upload once, none duplicated
    assert interrupted > 0, "no job was interrupted: the kills proved nothing"
    assert chaos.redis_kill is not None and chaos.sigterm is not None
