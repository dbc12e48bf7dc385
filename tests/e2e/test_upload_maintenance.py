"""Every upload node in maintenance: ``pixelfox put`` and ``POST /api/v1/images`` get the manager's 503 in the
words of ``pixelfox status`` ("no upload node takes new uploads (upload1: maintenance, upload2: maintenance)",
:mod:`pixelfox.idlenodes`), not "no healthy upload node", which hid that an admin had done it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from tests.browser.test_anonymous_upload import random_png
from tests.conftest import ClusterHandle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

UPLOAD = ("upload1", "upload2")  # the session cluster's upload nodes (tests/conftest.py)
SAID = "no upload node takes new uploads (upload1: maintenance, upload2: maintenance); try again later"


def test_uploads_say_every_upload_node_is_in_maintenance(cluster: ClusterHandle, tmp_path: Path) -> None:
    photo = tmp_path / "later.png"
    photo.write_bytes(random_png())
    try:
        for node in UPLOAD:
            res = cluster.pixelfox("nodes", "maintenance", node)
            assert res.returncode == 0, res.stdout + res.stderr
        status = cluster.pixelfox("status")
        assert "warning: no upload node takes new uploads (upload1: maintenance, upload2: maintenance)" in \
            status.stderr, status.stderr
        # the health column says maintenance too (it said "unhealthy"; the admin page says "maintenance")
        row = next(line for line in status.stdout.splitlines() if " upload1 " in line)
        assert row.count("maintenance") == 2 and "unhealthy" not in row, status.stdout
        # put waits --retry-for seconds for an upload node to take it, saying why (the manager's words: it
        # said "no upload node answers", as for nodes that are down), then gives those words
        started = time.monotonic()
        put = cluster.pixelfox("put", "--retry-for", "3", str(photo))
        took = time.monotonic() - started
        assert put.returncode == 1 and SAID in put.stdout + put.stderr, (put.stdout, put.stderr)
        assert f"{photo}: {SAID.removesuffix('; try again later')}; retrying for up to 3 s (Ctrl-C to stop" \
            in put.stderr, put.stderr
        assert "no upload node answers" not in put.stderr, put.stderr
        assert 3 <= took < 30, took
        assert "no healthy upload node" not in put.stdout + put.stderr
        # --retry-for 0 does not wait; the file was never sent, so it is refused (not paused: nothing to resume)
        started = time.monotonic()
        put = cluster.pixelfox("put", "--json", "--retry-for", "0", str(photo))
        took = time.monotonic() - started
        assert put.returncode == 1, (put.stdout, put.stderr)
        out = json.loads(put.stdout)
        assert (out["status"], out["error"]) == ("rejected", {"code": "no-node-available", "message": SAID}), out
        assert f"{photo}: {SAID.removesuffix('; try again later')}; not retrying (--retry-for 0)" in put.stderr
        assert took < 3 + 10, took
        r = requests.post(f"{cluster.web_url}/api/v1/images", timeout=60,
                          files={"file": ("later.png", photo.read_bytes(), "image/png")})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["message"] == SAID, r.text
    finally:
        for node in UPLOAD:
            res = cluster.pixelfox("nodes", "maintenance", node, "--off")
            assert res.returncode == 0, res.stdout + res.stderr
    r = requests.post(f"{cluster.web_url}/api/v1/images", timeout=60,
                      files={"file": ("later.png", photo.read_bytes(), "image/png")})
    assert r.status_code == 201, r.text
