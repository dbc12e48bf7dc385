"""Two processes opening a new SQLite database at the same moment: both connections switch it to
WAL mode (``pixelfox.db.engine``'s connect hook). SQLite refuses one of the two switches at once
with "database is locked" instead of waiting (deadlock avoidance), which made one of two managers
starting on a new database exit in CI; the hook now tries again."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

from pixelfox.db import engine

ROUNDS = 150  # the old hook failed about 1 round in 10 on a 2-core machine


def _open(path: str, start: float, out: multiprocessing.Queue) -> None:
    while time.time() < start:  # both processes open within microseconds of each other
        pass
    try:
        conn = sqlite3.connect(path, timeout=engine.BUSY_TIMEOUT_MS / 1000)
        engine._sqlite_pragmas(conn, None)
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        conn.execute("CREATE TABLE IF NOT EXISTS t (a INTEGER)")
        conn.commit()
        conn.close()
        out.put(mode)
    except sqlite3.Error as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def test_two_processes_switching_a_new_database_to_wal_both_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    results: list[str] = []
    for r in range(ROUNDS):
        db = tmp_path / f"new{r}.db"
        if r % 2:
            db.touch()  # pixelfox creates the file empty (0600) first; a missing file races the same way
        out = ctx.Queue()
        start = time.time() + 0.05
        procs = [ctx.Process(target=_open, args=(str(db), start, out)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        results += [out.get(timeout=5) for _ in procs]
    assert results == ["wal"] * (2 * ROUNDS), [x for x in results if x != "wal"][:3]


def test_a_lock_held_longer_than_the_budget_is_still_an_error(tmp_path: Path) -> None:
    """The retry is bounded: another connection that keeps the file locked (an exclusive rollback-journal
    transaction) makes the switch fail after the budget, not hang."""
    db = tmp_path / "held.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (a INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(db, timeout=0)
    t0 = time.monotonic()
    try:
        engine.set_wal_mode(other.cursor(), budget_s=0.3)
    except sqlite3.OperationalError as exc:
        assert "database is locked" in str(exc)
    else:
        raise AssertionError("the switch succeeded while another connection held an exclusive lock")
    finally:
        holder.execute("ROLLBACK")
    assert 0.3 <= time.monotonic() - t0 < 3
