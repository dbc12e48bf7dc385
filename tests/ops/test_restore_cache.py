"""A restore gives the database a new generation: managers that start on it empty the Redis read model,
so an image the restore removed is not served from the cache (pages and API answer 404)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from pixelfox import readmodel
from pixelfox.cli.launcher import Counts
from tests.ops.conftest import cli, start_cluster

pytestmark = pytest.mark.e2e

COUNTS = Counts(upload=1, proc=1, storage=1, web=1)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as res:
            return int(res.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _put(root: Path, file: Path) -> str:
    res = cli(root, "put", "--json", "--wait", str(file), timeout=300)
    out = json.loads(res.stdout.splitlines()[0])
    assert res.returncode == 0 and out["status"] == "ready", res.stdout + res.stderr
    return str(out["url"]).rstrip("/").rsplit("/", 1)[-1]  # the page URL, .../i/<slug>


def test_after_a_restore_the_read_model_no_longer_shows_removed_images(tmp_path: Path, corpus: Path) -> None:
    local = start_cluster(tmp_path, COUNTS)
    try:
        kept = _put(tmp_path, corpus / "photos" / "painting_rgb.png")
        backup = tmp_path / "meta.jsonl"
        assert cli(tmp_path, "backup", str(backup)).returncode == 0
        gone = _put(tmp_path, corpus / "photos" / "blackbug_alpha.png")
        web = local.web_urls[0]
        for slug in (kept, gone):  # pages and API fill the read model
            assert _get(f"{web}/i/{slug}") == 200 and _get(f"{web}/api/v1/images/{slug}") == 200
    finally:
        local.stop()
    res = cli(tmp_path, "restore", str(backup), "--force")
    assert res.returncode == 0, res.stdout + res.stderr

    local = start_cluster(tmp_path, COUNTS)  # the same Redis data (append-only file in .pixelfox)
    try:
        web = local.web_urls[0]
        assert _get(f"{web}/i/{gone}") == 404 and _get(f"{web}/api/v1/images/{gone}") == 404
        assert _get(f"{web}/i/{kept}") == 200 and _get(f"{web}/api/v1/images/{kept}") == 200
        assert readmodel.key(gone).encode() not in set(_redis_keys(local.redis_url))
    finally:
        local.stop()


def _redis_keys(url: str) -> list[bytes]:
    r = redis.Redis.from_url(url)
    try:
        return list(r.scan_iter(match=readmodel.key("*")))
    finally:
        r.close()
