"""The default per-IP limit of anonymous uploads, on a private cluster with the default limits.

A cluster of its own: the shared session cluster's budget for 127.0.0.1 also takes the anonymous
uploads of other tests (``tests/e2e/test_clients.py``), which spending it here would fail.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Iterator

import pytest
import redis
import requests
from PIL import Image

from pixelfox.cli.launcher import LocalCluster
from pixelfox.config import ANONYMOUS_IP_UPLOADS_PER_MINUTE
from tests.conftest import wait_http
from tests.e2e.uploadkit import new_user_key, own_cluster

pytestmark = pytest.mark.e2e

LIMIT = ANONYMOUS_IP_UPLOADS_PER_MINUTE  # the default the web node runs with (unless this environment sets it)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("anonymous"), upload=1, web=1) as c:
        wait_http(f"{c.web_urls[0]}/healthz")
        yield c


def _png() -> dict[str, tuple[str, bytes, str]]:
    """A ``files=`` form of a new 16x16 PNG (random colour: never a dedup of another)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), tuple(os.urandom(3))).save(buf, "PNG")
    return {"file": ("anon.png", buf.getvalue(), "image/png")}


def test_anonymous_uploads_past_the_default_get_429_while_an_api_key_still_uploads(local: LocalCluster) -> None:
    assert LIMIT > 0  # on by default: a fresh site is not open to a flood
    key = asyncio.run(new_user_key(local, "keyholder"))
    url = f"{local.web_urls[0]}/api/v1/images?wait=0"
    started = time.monotonic()
    codes = [requests.post(url, files=_png(), timeout=60).status_code for _ in range(LIMIT)]
    assert codes == [201] * LIMIT
    refused = requests.post(url, files=_png(), timeout=60)
    elapsed = time.monotonic() - started
    assert elapsed < 55, "the uploads took most of the minute: the window may have refilled"
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "rate-limited"
    assert error["message"].startswith(f"more than {LIMIT} uploads a minute from this address without an "
                                       "account; wait "), error
    assert error["message"].endswith(" s; log in or use an API key for more"), error
    assert 1 <= int(refused.headers["Retry-After"]) <= 60  # when the minute from the first upload ends

    keyed = requests.post(url, files=_png(), headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert keyed.status_code == 201, keyed.text
    assert keyed.json()["status"] in ("processing", "ready") and keyed.json()["id"]
    assert requests.post(url, files=_png(), timeout=60).status_code == 429  # the visitor still waits
    with redis.Redis.from_url(local.redis_url) as r:  # refused uploads and the key's are not counted
        assert int(r.get("pixelfox:{limits}:anon-ip:127.0.0.1") or 0) == LIMIT
