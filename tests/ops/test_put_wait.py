"""``pixelfox put --json --wait`` whose ``--timeout`` runs out: the image is still ``processing``
(a cluster without a processing node here), exit 1, and one stderr line per such file saying so;
it used to be a silent exit 1 with nothing on stderr."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pixelfox.cli.launcher import Counts
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
