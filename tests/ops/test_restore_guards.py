"""``pixelfox restore`` and ``migrate-db`` as an operator runs them from any folder.

* A restore with ``--force`` from outside the cluster folder replaced the rows of the SQLite file a
  running manager served (it checked only the folder's own cluster); a running manager now marks its
  database (:mod:`pixelfox.db.inuse`), and both commands refuse it from anywhere.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixelfox.cli.launcher import free_port
from tests.fulldisk import can_mount_tmpfs, on_small_tmpfs

pytestmark = pytest.mark.e2e


def _pixelfox(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")}
    return subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def _manager(site: Path, db: Path, redis_url: str) -> subprocess.Popen[bytes]:
    """A manager alone in ``site`` on the SQLite file ``db``, started once its schema is made."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")},
           "PIXELFOX_CLUSTER__SECRET": "restore-guards-secret-0123456789", "PIXELFOX_GRPC__PORT": str(free_port()),
           "PIXELFOX_METRICS_PORT": "-1", "PIXELFOX_REDIS__URL": redis_url,
           "PIXELFOX_DATABASE__URL": f"sqlite+aiosqlite:///{db}"}
    log = site / "manager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nodes.manager"], cwd=site, stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + 60
    while "database schema" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return proc


def test_restore_and_migrate_refuse_a_running_managers_database_from_any_folder(tmp_path: Path,
                                                                                redis_url: str) -> None:
    site, drill = tmp_path / "site", tmp_path / "drill"
    site.mkdir()
    drill.mkdir()
    db = site / "live.db"
    (drill / "link.db").symlink_to(db)
    other = f"sqlite+aiosqlite:///{drill / 'other.db'}"
    assert _pixelfox(drill, "upgrade-db", "--db", other).returncode == 0
    proc = _manager(site, db, redis_url)
    try:
        live = f"sqlite+aiosqlite:///{db}"
        res = _pixelfox(drill, "backup", "b1.jsonl.gz", "--db", live)  # reading it stays allowed
        assert res.returncode == 0, res.stderr
        for url in (live, f"sqlite+aiosqlite:///{drill / 'link.db'}"):
            res = _pixelfox(drill, "restore", "b1.jsonl.gz", "--force", "--db", url)
            assert res.returncode == 2, res.stdout + res.stderr
            assert (f"{url} is the database a running manager uses: restoring a backup over it would replace its "
                    "live rows. Stop its managers first, or pick another database (bad-request)") in res.stderr
            assert "restored" not in res.stdout
        res = _pixelfox(drill, "migrate-db", "--source", other, "--target", live)
        assert res.returncode == 2 and "is the database a running manager uses: copying" in res.stderr, res.stderr
    finally:
        proc.terminate()
        proc.wait(30)
    assert (site / "live.db.manager-lock").exists()  # left behind, but no process holds it any more
    res = _pixelfox(drill, "restore", "b1.jsonl.gz", "--force", "--db", live)
    assert res.returncode == 0 and json.loads(res.stdout)["restored"] is True, res.stderr


# ---- what a restore leaves on disk ------------------------------------------------------------------

def _backup(tmp_path: Path) -> Path:
    src = f"sqlite+aiosqlite:///{tmp_path / 'src.db'}"
    assert _pixelfox(tmp_path, "upgrade-db", "--db", src).returncode == 0
    out = tmp_path / "b1.jsonl"
    assert _pixelfox(tmp_path, "backup", str(out), "--db", src).returncode == 0
    return out


def test_a_restored_sqlite_file_is_private_and_leaves_no_lock_file(tmp_path: Path) -> None:
    """It holds password and API-key hashes, as the backup (0600) does; it was 0644, beside a
    left-over ``.schema-lock``."""
    good = _backup(tmp_path)
    target = tmp_path / "restored.db"
    res = _pixelfox(tmp_path, "restore", str(good), "--db", f"sqlite+aiosqlite:///{target}")
    assert res.returncode == 0 and json.loads(res.stdout)["restored"] is True, res.stderr
    made = sorted(p.name for p in tmp_path.glob("restored.db*"))
    assert made[0] == "restored.db" and set(made) <= {"restored.db", "restored.db-wal", "restored.db-shm"}, made
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.glob("restored.db*")} == dict.fromkeys(made, 0o600)
    assert not list(tmp_path.glob("*.schema-lock"))  # upgrade-db of src.db removed its own too


def test_a_backup_onto_a_full_disk_names_the_file_and_leaves_none(tmp_path: Path) -> None:
    """It said only "pixelfox: No space left on device" (a write names no file)."""
    src = f"sqlite+aiosqlite:///{tmp_path / 'src.db'}"
    assert _pixelfox(tmp_path, "upgrade-db", "--db", src).returncode == 0
    full = tmp_path / "full"
    full.mkdir()
    if not can_mount_tmpfs(full):
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (unshare -rm)")
    target = full / "b.jsonl"
    script = f'"$0" -m pixelfox backup "{target}" --db "{src}"; echo "exit $?"; ls -A "{full}"'
    res = subprocess.run(on_small_tmpfs(full, "8k", ["sh", "-c", script, sys.executable], fill_bytes=8192),
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
                         env={k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")})
    assert res.stderr.strip().splitlines()[-1] == f"pixelfox: No space left on device: {target}", res.stderr
    assert res.stdout.split() == ["exit", "1", "fill"], res.stdout  # no b.jsonl, no b.jsonl.part


def test_a_failed_restore_leaves_no_file_it_made(tmp_path: Path) -> None:
    good = _backup(tmp_path)
    broken = tmp_path / "broken.jsonl"  # a good header, then a damaged row: fails after the schema is made
    broken.write_text(good.read_text().splitlines()[0] + "\n{not json\n")
    target = tmp_path / "r3.db"
    url = f"sqlite+aiosqlite:///{target}"
    for bad, why in ((tmp_path / "missing.gz", f"no such file: {tmp_path / 'missing.gz'} (bad-request)"),
                     (tmp_path, f"{tmp_path} is not a file"),
                     (Path("/etc/passwd"), "/etc/passwd is not a PixelFox metadata backup"),
                     (broken, f"{broken} is truncated or damaged at line 2")):
        res = _pixelfox(tmp_path, "restore", str(bad), "--db", url)
        assert res.returncode == 2 and why in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert sorted(p.name for p in tmp_path.glob("r3.db*")) == [], bad


def test_a_damaged_backup_is_refused_in_one_line_and_changes_nothing(tmp_path: Path) -> None:
    """Three damages a tester made: gzip data garbled past its header (zlib's "invalid distance too far
    back" was a traceback, exit 1), a row twice (a raw "UNIQUE constraint failed", exit 1) and a row
    with a column its table lacks (dropped without a word, and the restore "verified"). Each is now a
    one-line refusal naming the file, exit 2, and the target is left as it was (a new file removed)."""
    import gzip

    good = _backup(tmp_path)
    header = good.read_text().splitlines()[0]
    garbled = tmp_path / "garbled.jsonl.gz"
    packed = gzip.compress((header + "\n" + "x" * 5000 + "\n").encode())
    # seeded: os.urandom's garbage failed as zlib's error, BadGzipFile or, decoded as junk, JSON
    garbled.write_bytes(packed[:100] + random.Random(5).randbytes(5000))
    row = {"key": "ab/cd", "node_id": "storage1", "size": 5, "created_at": "2026-01-01T00:00:00+00:00"}
    twice, extra = tmp_path / "twice.jsonl", tmp_path / "extra.jsonl"
    line = json.dumps({"t": "object_locations", "r": row})
    twice.write_text(f"{header}\n{line}\n{line}\n")
    extra.write_text(header + "\n" + json.dumps({"t": "object_locations", "r": {**row, "colour": "red"}}) + "\n")
    null, short = tmp_path / "null.jsonl", tmp_path / "short.jsonl"
    null.write_text(header + "\n" + json.dumps({"t": "object_locations", "r": None}) + "\n")
    lacking = {k: v for k, v in {**row, "key": "ab/ce"}.items() if k != "created_at"}  # after a full row
    short.write_text(f"{header}\n{line}\n" + json.dumps({"t": "object_locations", "r": lacking}) + "\n")
    target = tmp_path / "r4.db"
    for bad, why in ((null, f"{null} is damaged: a row of table object_locations is not an object"),
                     (short, f"{short} is damaged: a row of table object_locations cannot be stored"),
                     (garbled, f"{garbled} is "),  # garbage decodes to a zlib error, BadGzipFile or JSON junk
                     (twice, f"{twice} is damaged: its rows of table object_locations break the schema's "
                             "constraints (UNIQUE constraint failed"),
                     (extra, f"{extra} is damaged: a row of table object_locations has a column that table does "
                             "not have (colour)")):
        res = _pixelfox(tmp_path, "restore", str(bad), "--db", f"sqlite+aiosqlite:///{target}")
        assert res.returncode == 2 and why in res.stderr and "Traceback" not in res.stderr, (bad, res.stderr)
        assert why in res.stderr.strip().splitlines()[-1], res.stderr  # one line says it
        assert sorted(p.name for p in tmp_path.glob("r4.db*")) == [], bad
