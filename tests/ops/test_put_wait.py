"""``pixelfox put --json --wait`` whose ``--timeout`` runs out: the image is still ``processing``
(a cluster without a processing node here), exit 1, and one stderr line per such file saying so;
it used to be a silent exit 1 with nothing on stderr. And a wait that meets a manager restart (``up``
restarts a manager that died): it asks again until the manager answers; it reported the stored image
"rejected" with no id (a fresh tester's find)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pixelfox.cli.launcher import Counts
from tests.jobtools import wait_log
from tests.ops.conftest import cli, start_cluster

pytestmark = pytest.mark.e2e

PHOTO = Path("/work/shared/corpus/photos/blackbug_alpha.png")


def test_put_wait_that_times_out_says_so_on_stderr(tmp_path: Path) -> None:
    local = start_cluster(tmp_path / "site", Counts(upload=1, proc=0, storage=1, web=0))
    try:
        photo = tmp_path / "site" / "bug.png"
        shutil.copyfile(PHOTO, photo)
        res = cli(tmp_path / "site", "put", "--json", "--wait", "--timeout", "0.5", str(photo))
    finally:
        local.stop()
    assert res.returncode == 1, res.stderr
    (line,) = res.stdout.splitlines()
    assert json.loads(line)["status"] == "processing", line
    assert res.stderr.splitlines() == [
        f"{photo}: still processing after 0.5 s; its link works once it is ready "
        "(`pixelfox jobs` shows the queue; wait longer with --timeout)"], res.stderr


def test_put_wait_rides_out_a_manager_restart(tmp_path: Path) -> None:
    site = tmp_path / "site"
    # each job holds its processing node 5 s: the manager is killed while the image is processing; the job
    # the dead manager held is taken again after PIXELFOX_LEASE_S (docs/jobs.md; 120 s by default)
    local = start_cluster(site, Counts(upload=1, proc=1, storage=1, web=0),
                          {"PIXELFOX_FAILPOINT": "before-process=sleep(5000)", "PIXELFOX_LEASE_S": "3"})
    try:
        photo = site / "bug.png"
        shutil.copyfile(PHOTO, photo)
        put = subprocess.Popen([sys.executable, "-m", "pixelfox", "put", "--json", "--wait", "--timeout", "150",
                                str(photo)], cwd=site, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        queued = wait_log(local, "manager1", r"upload \S+ complete: image (\S+) queued", timeout_s=60)
        local.restart("manager1")  # SIGKILL, started again: the wait's next calls are refused for a while
        out, err = put.communicate(timeout=240)
    finally:
        local.stop()
    assert put.returncode == 0, (out, err)
    (line,) = out.splitlines()
    got = json.loads(line)
    assert (got["id"], got["status"], got["error"]) == (queued.group(1), "ready", None), got
