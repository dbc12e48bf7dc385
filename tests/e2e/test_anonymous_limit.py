"""The default per-IP limit of anonymous uploads, on a private cluster with the default limits.

A cluster of its own: the shared session cluster's budget for 127.0.0.1 also takes the anonymous
uploads of other tests (``tests/e2e/test_clients.py``), which spending it here would fail. Uploads
made with ``pixelfox put`` straight to the manager's gRPC port, without a key, spend the same budget.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
import requests
from PIL import Image

from pixelfox.cli.launcher import LocalCluster
from pixelfox.config import ANONYMOUS_IP_UPLOADS_PER_MINUTE
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.conftest import wait_http
from tests.e2e.uploadkit import new_user_key, own_cluster

pytestmark = pytest.mark.e2e

LIMIT = ANONYMOUS_IP_UPLOADS_PER_MINUTE  # the default the web node runs with (unless this environment sets it)
ANON_KEY = "pixelfox:{limits}:anon-ip:127.0.0.1"


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
    with redis.Redis.from_url(local.redis_url) as r:  # the other tests' uploads spend the same budget
        r.delete(ANON_KEY)
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
        assert int(r.get(ANON_KEY) or 0) == LIMIT  # counted once: the manager does not count the web's calls


def _manager_put(local: LocalCluster, photo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pixelfox put ARGS --manager ADDRESS photo`` (``--json`` unless ``args`` are given) with no cluster
    secret (run outside the cluster's folder) and no API key unless ``args`` has one: straight to the
    manager's gRPC port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")}
    return subprocess.run([sys.executable, "-m", "pixelfox", "put", *(args or ("--json",)), "--manager",
                           local.manager_address, str(photo)], cwd=photo.parent, capture_output=True, text=True,
                          timeout=120, check=False, env=env)


async def _create_anonymous(manager: str) -> manager_pb2.CreateUploadResponse:
    async with grpc.aio.insecure_channel(manager) as ch:
        return await manager_pb2_grpc.ManagerServiceStub(ch).CreateUpload(
            manager_pb2.CreateUploadRequest(filename="x.png", size=100, content_type="image/png"), timeout=10)


def test_anonymous_grpc_uploads_past_the_limit_are_refused_as_over_http(local: LocalCluster, tmp_path: Path) -> None:
    """``pixelfox put`` without a key straight to the manager spends the address' anonymous budget the
    web node keeps (the same key): the 21st upload in a minute is refused with the web's words."""
    with redis.Redis.from_url(local.redis_url) as r:
        r.delete(ANON_KEY)
    started = time.monotonic()

    async def creates() -> list[str]:
        return [(await _create_anonymous(local.manager_address)).upload_id for _ in range(LIMIT)]

    assert all(asyncio.run(creates()))
    with pytest.raises(grpc.RpcError) as refused:
        asyncio.run(_create_anonymous(local.manager_address))
    assert time.monotonic() - started < 55, "the uploads took most of the minute: the window may have refilled"
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    message = refused.value.details()
    assert message.startswith(f"more than {LIMIT} uploads a minute from this address without an account; wait ")
    assert message.endswith(" s; log in or use an API key for more"), message
    photo = tmp_path / "anon.png"
    photo.write_bytes(_png()["file"][1])
    res = _manager_put(local, photo)
    assert res.returncode == 1, res
    answer = json.loads(res.stdout)
    assert answer["status"] == "rejected" and answer["error"]["code"] == "rate-limited", answer
    assert answer["error"]["message"].startswith(f"more than {LIMIT} uploads a minute from this address "), answer
    with redis.Redis.from_url(local.redis_url) as r:
        assert int(r.get(ANON_KEY) or 0) == LIMIT  # the refused ones are not counted
        r.delete(ANON_KEY)


def test_anonymous_put_gets_a_deletion_link_that_deletes_its_image(local: LocalCluster, tmp_path: Path) -> None:
    """``pixelfox put --json`` without a key straight to the manager: the answer carries the image's
    deletion link (the only way its uploader can delete it); GET confirms, POST deletes, then 404. The
    same bytes put again by a signed-in user get no such link."""
    with redis.Redis.from_url(local.redis_url) as r:
        r.delete(ANON_KEY)
    photo = tmp_path / "mine.png"
    photo.write_bytes(_png()["file"][1])
    res = _manager_put(local, photo)
    assert res.returncode == 0, res
    answer = json.loads(res.stdout)
    slug, link = answer["id"], answer["deletion_url"]
    assert link.startswith(f"{local.web_urls[0]}/api/v1/delete/{slug}/anonymous/"), answer
    text = _manager_put(local, photo, "--wait")
    assert text.returncode == 0 and "delete: http" in text.stdout + text.stderr, text  # text output says it too

    key = asyncio.run(new_user_key(local, "linkless"))
    keyed = _manager_put(local, photo, "--json", "--api-key", key)
    assert keyed.returncode == 0, keyed
    assert json.loads(keyed.stdout)["deletion_url"] == "", keyed.stdout  # not the anonymous one's link

    confirm = requests.get(link, headers={"Accept": "application/json"}, timeout=30)
    assert confirm.status_code == 200, confirm.text
    assert confirm.json()["id"] == slug
    assert requests.get(f"{local.web_urls[0]}/api/v1/images/{slug}", timeout=30).status_code == 200
    deleted = requests.post(link, headers={"Accept": "application/json"}, timeout=120)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": True, "id": slug}
    assert requests.get(f"{local.web_urls[0]}/api/v1/images/{slug}", timeout=30).status_code == 404
    assert requests.get(link, headers={"Accept": "application/json"}, timeout=30).status_code == 404
