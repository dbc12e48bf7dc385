"""``pixelfox restore`` and ``migrate-db`` as an operator runs them from any folder.

* A restore with ``--force`` from outside the cluster folder replaced the rows of the SQLite file a
  running manager served (it checked only the folder's own cluster); a running manager now marks its
  database (:mod:`pixelfox.db.inuse`), and both commands refuse it from anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixelfox.cli.launcher import free_port

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
