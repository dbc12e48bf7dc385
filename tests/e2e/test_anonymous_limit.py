"""The default per-IP limit of anonymous uploads, on a private cluster with the default limits.

The budget holds LIMIT uploads at once and refills one every 60 / LIMIT s (GCRA,
:mod:`pixelfox.ratelimit`): uploads sent one after another are refused from about the LIMIT-th on,
plus one for each 60 / LIMIT s they took.

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
from typing import Any

import grpc
import pytest
import redis
import redis.asyncio as aioredis
import requests
from PIL import Image

from pixelfox.cli.launcher import LocalCluster
from pixelfox.config import ANONYMOUS_IP_UPLOADS_PER_MINUTE
from pixelfox.ratelimit import forget, state_key, take
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.conftest import wait_http
from tests.e2e.uploadkit import budget_held, forget_budget, new_user_key, own_cluster

pytestmark = pytest.mark.e2e

LIMIT = ANONYMOUS_IP_UPLOADS_PER_MINUTE  # the default the web node runs with (unless this environment sets it)
ANON_KEY = "pixelfox:{limits}:anon-ip:127.0.0.1"
STEP_S = 60 / LIMIT  # one upload refills every STEP_S


def until_refused(attempt: Any) -> tuple[int, Any, float]:
    """Call ``attempt()`` (True: accepted, else the refusal) until it is refused, at most 3 x LIMIT
    times: (accepted, the refusal, seconds taken)."""
    started = time.monotonic()
    for accepted in range(3 * LIMIT):
        if (answer := attempt()) is not True:
            return accepted, answer, time.monotonic() - started
    raise AssertionError(f"{3 * LIMIT} anonymous uploads in {time.monotonic() - started:.1f} s, none refused")


def assert_the_limit(accepted: int, elapsed: float) -> None:
    """LIMIT at once, and one more per STEP_S the uploads took (the first a little after the start)."""
    assert LIMIT <= accepted <= LIMIT + elapsed / STEP_S + 1, (accepted, elapsed)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # the managers take the client address of a call from 127.0.0.1 from its x-forwarded-for metadata: a call
    # without one (pixelfox put, the other tests) is still counted on 127.0.0.1
    with own_cluster(tmp_path_factory.mktemp("anonymous"), upload=1, web=1,
                     PIXELFOX_GRPC_TRUSTED_PROXIES="127.0.0.1") as c:
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
        forget_budget(r, ANON_KEY)
    key = asyncio.run(new_user_key(local, "keyholder"))
    url = f"{local.web_urls[0]}/api/v1/images?wait=0"

    def upload() -> bool | requests.Response:
        answer = requests.post(url, files=_png(), timeout=60)
        return answer.status_code == 201 or answer

    accepted, refused, elapsed = until_refused(upload)
    assert_the_limit(accepted, elapsed)  # counted once each: the manager does not count the web's calls again
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "rate-limited"
    assert error["message"].startswith(f"more than {LIMIT} uploads a minute from this address without an "
                                       "account; wait "), error
    assert error["message"].endswith(" s; log in or use an API key for more"), error
    assert 1 <= int(refused.headers["Retry-After"]) <= STEP_S  # when one more upload fits

    with redis.Redis.from_url(local.redis_url) as r:  # refused uploads and the key's are not counted
        spent = r.hget(state_key(ANON_KEY), "tat")  # when the budget is empty again: moves with each count
        keyed = requests.post(url, files=_png(), headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert keyed.status_code == 201, keyed.text
        assert keyed.json()["status"] in ("processing", "ready") and keyed.json()["id"]
        assert spent and r.hget(state_key(ANON_KEY), "tat") == spent


async def _spend_for(url: str, key: str, seconds: float) -> None:
    """Leave budget ``key`` spent for about ``seconds`` (one attempt of a budget of 1 per ``seconds``),
    so a slow client is still refused; one of LIMIT a minute refills an upload every 3 s."""
    client = aioredis.Redis.from_url(url)
    try:
        await forget(client, [key])
        assert await take(client, [(key, 1)], seconds) == 0
    finally:
        await client.aclose()


def _manager_put(local: LocalCluster, photo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pixelfox put ARGS --manager ADDRESS photo`` (``--json`` unless ``args`` are given) with no cluster
    secret (run outside the cluster's folder) and no API key unless ``args`` has one: straight to the
    manager's gRPC port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")}
    return subprocess.run([sys.executable, "-m", "pixelfox", "put", *(args or ("--json",)), "--manager",
                           local.manager_address, str(photo)], cwd=photo.parent, capture_output=True, text=True,
                          timeout=120, check=False, env=env)


async def _create_anonymous(manager: str, forwarded_for: str = "") -> manager_pb2.CreateUploadResponse:
    metadata = (("x-forwarded-for", forwarded_for),) if forwarded_for else None
    async with grpc.aio.insecure_channel(manager) as ch:
        return await manager_pb2_grpc.ManagerServiceStub(ch).CreateUpload(
            manager_pb2.CreateUploadRequest(filename="x.png", size=100, content_type="image/png"), timeout=10,
            metadata=metadata)


def test_anonymous_grpc_uploads_past_the_limit_are_refused_as_over_http(local: LocalCluster, tmp_path: Path) -> None:
    """``pixelfox put`` without a key straight to the manager spends the address' anonymous budget the
    web node keeps (the same key): the 21st upload in a minute is refused with the web's words."""
    with redis.Redis.from_url(local.redis_url) as r:
        forget_budget(r, ANON_KEY)

    def create() -> bool | grpc.RpcError:
        try:
            return bool(asyncio.run(_create_anonymous(local.manager_address)).upload_id)
        except grpc.RpcError as exc:
            return exc

    accepted, refused, elapsed = until_refused(create)
    assert_the_limit(accepted, elapsed)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    message = refused.details()
    assert message.startswith(f"more than {LIMIT} uploads a minute from this address without an account; wait ")
    assert message.endswith(" s; log in or use an API key for more"), message
    photo = tmp_path / "anon.png"
    photo.write_bytes(_png()["file"][1])
    asyncio.run(_spend_for(local.redis_url, ANON_KEY, 120))  # pixelfox put may take longer to start than 3 s
    res = _manager_put(local, photo)
    assert res.returncode == 1, res
    answer = json.loads(res.stdout)
    assert answer["status"] == "rejected" and answer["error"]["code"] == "rate-limited", answer
    assert answer["error"]["message"].startswith(f"more than {LIMIT} uploads a minute from this address "), answer
    with redis.Redis.from_url(local.redis_url) as r:
        forget_budget(r, ANON_KEY)


def test_anonymous_put_gets_a_deletion_link_that_deletes_its_image(local: LocalCluster, tmp_path: Path) -> None:
    """``pixelfox put --json`` without a key straight to the manager: the answer carries the image's
    deletion link (the only way its uploader can delete it); GET confirms, POST deletes, then 404. The
    same bytes put again by a signed-in user get no such link."""
    with redis.Redis.from_url(local.redis_url) as r:
        forget_budget(r, ANON_KEY)
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


def test_an_anonymous_upload_whose_answer_was_lost_gets_its_deletion_link_again(local: LocalCluster,
                                                                                tmp_path: Path) -> None:
    """A ``pixelfox put`` without a key whose stream ended before its answer came asks ``GetUpload``
    for the receipt (:func:`~pixelfox.client.uploader._lost_receipt`): that receipt carried the image
    but no deletion link, so the uploader had no way left to delete it. ``GetUpload`` now gives the
    same link ``CompleteUpload`` gave (to the holder of the upload id, the secret of an anonymous
    upload); an owned upload's answer still has none."""
    from pixelfox.client.uploader import _lost_receipt, upload_file
    from pixelfox.grpcx.auth import api_key_metadata
    from pixelfox.v1 import upload_pb2

    with redis.Redis.from_url(local.redis_url) as r:
        forget_budget(r, ANON_KEY)
    key = asyncio.run(new_user_key(local, "lostreceipt"))

    async def sent_and_lost(md: tuple[tuple[str, str], ...]) -> tuple[str, str]:
        photo = tmp_path / f"lost{len(md)}.png"
        photo.write_bytes(_png()["file"][1])
        async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
            stub = manager_pb2_grpc.ManagerServiceStub(ch)
            sent = await upload_file(stub, md, photo)
            lost = await _lost_receipt(stub, md, upload_pb2.UploadHeader(upload_id=sent.upload_id, size=sent.size))
        assert (lost.upload_id, lost.image.slug, lost.deduplicated) == (sent.upload_id, sent.image.slug, False)
        return sent.deletion_url, lost.deletion_url

    given, again = asyncio.run(sent_and_lost(()))
    assert given.startswith(f"{local.web_urls[0]}/api/v1/delete/") and "/anonymous/" in given, given
    assert again == given
    assert asyncio.run(sent_and_lost(api_key_metadata(key))) == ("", "")


def test_behind_a_trusted_grpc_proxy_each_forwarded_client_has_its_own_budget(local: LocalCluster) -> None:
    """With ``PIXELFOX_GRPC_TRUSTED_PROXIES=127.0.0.1`` a direct anonymous ``CreateUpload`` from 127.0.0.1 is
    counted on the address that ends its ``x-forwarded-for`` (the one the proxy added; an address the
    client put before it is not believed), not on the proxy's."""
    client, other, proxy = "203.0.113.50", "203.0.113.51", "127.0.0.1"
    budgets = [f"pixelfox:{{limits}}:anon-ip:{a}" for a in (client, other, proxy)]
    with redis.Redis.from_url(local.redis_url) as r:
        for key in budgets:
            forget_budget(r, key)
        assert asyncio.run(_create_anonymous(local.manager_address, client)).upload_id
        assert asyncio.run(_create_anonymous(local.manager_address, f"198.51.100.9, {other}")).upload_id
        assert [budget_held(r, key) for key in budgets] == [1, 1, 0]
        assert r.exists(state_key("pixelfox:{limits}:anon-ip:198.51.100.9")) == 0
        assert asyncio.run(_create_anonymous(local.manager_address)).upload_id  # no metadata: the peer's
        assert [budget_held(r, key) for key in budgets] == [1, 1, 1]
        for key in budgets:
            forget_budget(r, key)
