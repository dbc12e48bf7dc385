"""Who pays for a refused upload, and which key and user it is, on a private cluster with real nodes.

Settings: a user may have 2 unfinished uploads, start 5 a minute and keep 4 MiB; one address may start
6 uploads a minute at the web node. Each test starts with that address' budget unspent.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import grpc
import pytest
import redis
import requests
from PIL import Image

from pixelfox import errors
from pixelfox.cli.launcher import LocalCluster
from pixelfox.text import human_bytes
from pixelfox.v1 import manager_pb2
from tests.conftest import wait_http
from tests.e2e.test_upload_preflight import send_slowly
from tests.e2e.uploadkit import budget_held, create, forget_budget, new_user_key, own_cluster, raw_request

pytestmark = pytest.mark.e2e

OPEN, PER_MINUTE, QUOTA, PER_IP = 2, 5, 4 * 1024 * 1024, 6
IP_KEY = "pixelfox:{limits}:ip:127.0.0.1"
PER_USER = ("too-many-open-uploads", "rate-limited")  # the user's own 429s (rate-limited too on old code)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("budgets"), upload=1, web=1,
                     PIXELFOX_LIMITS__USER_OPEN_UPLOADS=str(OPEN),
                     PIXELFOX_LIMITS__USER_UPLOADS_PER_MINUTE=str(PER_MINUTE),
                     PIXELFOX_LIMITS__USER_QUOTA_BYTES=str(QUOTA),
                     PIXELFOX_LIMITS__IP_UPLOADS_PER_MINUTE=str(PER_IP)) as c:
        wait_http(f"{c.web_urls[0]}/healthz")
        yield c


@pytest.fixture
def r(local: LocalCluster) -> Iterator[redis.Redis]:
    """Redis of the cluster, this address' upload budget unspent."""
    with redis.Redis.from_url(local.redis_url) as client:
        forget_budget(client, IP_KEY)
        yield client


def manager(local: LocalCluster) -> str:
    return local.manager_address.split(",")[0]


def png() -> dict[str, tuple[str, bytes, str]]:
    """A ``files=`` form of a new 16x16 PNG (random colour: never a dedup of another)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), tuple(os.urandom(3))).save(buf, "PNG")
    return {"file": ("small.png", buf.getvalue(), "image/png")}


def user_id(local: LocalCluster, key: str) -> str:
    return requests.get(f"{local.web_urls[0]}/api/v1/me", headers={"X-API-Key": key}, timeout=10).json()["id"]


def rate_tokens(r: redis.Redis, uid: str) -> int:
    """The uploads ``uid``'s rate budget holds now (its GCRA budget, :mod:`pixelfox.ratelimit`), rounded up:
    one drains every 12 s (60 s / 5), so a count read within 12 s of the first upload counted is exact."""
    return budget_held(r, f"pixelfox:{{limits}}:rate:{uid}")


def assert_tokens(r: redis.Redis, uid: str, n: int) -> None:
    """``uid``'s rate budget holds the ``n`` uploads admitted, none of the refused ones: exactly ``n``, or
    ``n - 1`` when the test ran past the first one's 12 s (a loaded machine); a refusal counted would be
    one more."""
    held = rate_tokens(r, uid)
    assert (n - 1 <= held <= n) if n else held == 0, (held, n)


async def created(local: LocalCluster, key: str, size: int) -> str:
    """``""`` when CreateUpload admitted an upload of ``size`` bytes, else the refusal's error code. A call
    refused because the upload node is unhealthy for a moment (on a loaded machine its dependency check can
    take over 2 s: NOT_SERVING until the next one) is made again, for up to 30 s: that refusal comes before
    any limit is checked or counted."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await create(manager(local), key, size)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                continue
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            return dict(exc.trailing_metadata() or ()).get(errors.ERROR_CODE_KEY, "?")
        return ""


def test_uploads_refused_by_create_upload_use_up_no_rate_token(local: LocalCluster, r: redis.Redis) -> None:
    """8 CreateUpload calls over the quota (quota-exceeded), then 6 while 2 uploads are open
    (too-many-open-uploads): none of them counts against the 5 a minute, so an upload that fits
    goes through once a slot is free (the rate was counted before the other checks: it was a 429
    rate-limited), and the counter holds exactly the uploads admitted."""
    key = asyncio.run(new_user_key(local, "overquota"))
    uid = user_id(local, key)
    assert [asyncio.run(created(local, key, QUOTA + 1)) for _ in range(8)] == ["quota-exceeded"] * 8
    assert_tokens(r, uid, 0)
    assert asyncio.run(created(local, key, 1000)) == ""  # fits: the first upload this minute
    assert asyncio.run(created(local, key, 1000)) == ""
    assert [asyncio.run(created(local, key, 1000)) for _ in range(6)] == ["too-many-open-uploads"] * 6
    assert_tokens(r, uid, 2)
    opened = r.zrange(f"pixelfox:{{limits}}:open:{uid}", 0, 0)[0].decode()
    gone = requests.delete(f"{local.web_urls[0]}/api/v1/uploads/{opened}", headers={"X-API-Key": key}, timeout=10)
    assert gone.status_code == 204, gone.text
    assert asyncio.run(created(local, key, 1000)) == ""
    assert_tokens(r, uid, 3)


def test_parallel_admits_count_only_the_admitted(local: LocalCluster, r: redis.Redis) -> None:
    """12 CreateUpload calls at once: exactly 2 are admitted (the open-upload check and its record are
    one step), and the rate counter holds those 2, not 12."""
    key = asyncio.run(new_user_key(local, "parallel"))
    uid = user_id(local, key)

    async def burst() -> list[str]:
        return list(await asyncio.gather(*(created(local, key, 1000) for _ in range(12))))

    codes = asyncio.run(burst())
    assert codes.count("") == OPEN, codes
    assert set(codes) == {"", "too-many-open-uploads"}, codes
    assert_tokens(r, uid, OPEN)
    assert r.zcard(f"pixelfox:{{limits}}:open:{uid}") == OPEN


def test_chevereto_checks_and_uploads_one_key(local: LocalCluster, r: redis.Redis) -> None:
    """The pre-body check took the query's first ``key``, the upload its last (and a form ``key`` replaced
    both): one user was checked, another uploaded. A repeated ``key`` in the query, and a form key other
    than the one sent before the body, are 400s in Chevereto's shape; the same key twice is fine."""
    web = local.web_urls[0]
    a, b = (asyncio.run(new_user_key(local, name)) for name in ("chevone", "chevtwo"))
    url = f"{web}/api/1/upload"
    twice = requests.post(url, params=[("key", a), ("key", b)], files={"source": png()["file"]}, timeout=60)
    assert twice.status_code == 400, twice.text
    assert twice.json() == {"status_code": 400, "status_txt": "Bad Request", "error": {
        "code": "bad-request", "message": "key was sent more than once in the query string: send it once"}}
    for params, headers in (({"key": a}, {}), ({}, {"X-API-Key": a})):
        other = requests.post(url, params=params, headers=headers, data={"key": b}, files={"source": png()["file"]},
                              timeout=60)
        assert other.status_code == 400, other.text
        assert other.json()["status_code"] == 400 and "two different API keys" in other.json()["error"]["message"]
    both = requests.post(url, params={"key": b}, headers={"X-API-Key": a}, files={"source": png()["file"]},
                         timeout=60)
    assert both.status_code == 400 and "two different API keys" in both.json()["error"]["message"], both.text
    same = requests.post(url, params={"key": a}, data={"key": a}, files={"source": png()["file"]}, timeout=60)
    assert same.status_code == 200, same.text
    mine = requests.get(f"{web}/api/v1/images", headers={"X-API-Key": a}, timeout=10).json()["images"]
    assert [i["id"] for i in mine] == [same.json()["image"]["id_encoded"]]
    assert requests.get(f"{web}/api/v1/images", headers={"X-API-Key": b}, timeout=10).json()["images"] == []


def test_a_quota_refusal_before_the_body_names_the_body_not_the_file(local: LocalCluster, r: redis.Redis) -> None:
    """Before the body is read the file's size is an estimate (Content-Length less 64 KiB of form, halved
    for Chevereto): the 413 says it is the body's size that would pass the quota, not "this file
    needs N more". CreateUpload, which has the declared file size, keeps its words. Every surface
    answers a quota refusal 413 without Retry-After (it was a 429, which clients retry in vain)."""
    web = local.web_urls[0]
    key = asyncio.run(new_user_key(local, "bodysize"))
    body = QUOTA + 512 * 1024
    a = send_slowly(f"{web}/api/v1/images?wait=0", {"X-API-Key": key}, size=body)
    assert a.status == 413 and a.sent < a.size and a.json["error"]["code"] == "quota-exceeded", (a.status, a.json)
    assert "retry-after" not in a.headers
    said = a.json["error"]["message"]
    assert said == (f"quota: 0 of {QUOTA} bytes used; this upload's body of {body} bytes would pass it (answered "
                    f"before the body is read: its file is taken to be {body - 65536} bytes of it, the rest its "
                    f"form); to make room, delete images, or ask an admin for a larger quota (0 B of "
                    f"{human_bytes(QUOTA)} used)"), said
    chevereto = send_slowly(f"{web}/api/1/upload?key={key}", {}, field="source", size=2 * body)
    assert chevereto.status == 413, (chevereto.status, chevereto.json)
    assert (chevereto.json["status_code"], chevereto.json["error"]["code"]) == (413, "quota-exceeded"), chevereto.json
    assert "retry-after" not in chevereto.headers
    assert f"this upload's body of {2 * body} bytes would pass it" in chevereto.json["error"]["message"]
    assert f"taken to be {(2 * body - 65536) // 2} bytes" in chevereto.json["error"]["message"]
    declared = requests.post(f"{web}/api/v1/uploads", json={"filename": "a.png", "size": QUOTA + 1},
                             headers={"X-API-Key": key}, timeout=10)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "quota-exceeded", declared.text
    assert "Retry-After" not in declared.headers
    assert declared.json()["error"]["message"] == (f"quota: 0 of {QUOTA} bytes used; this file needs {QUOTA + 1} more; "
                                                   "to make room, delete images, or ask an admin for a larger quota "
                                                   f"(0 B of {human_bytes(QUOTA)} used)")


def test_a_full_quota_is_a_413_on_every_upload_path_and_limits_stay_429(local: LocalCluster, r: redis.Redis) -> None:
    """A user whose quota is full (two open uploads declare all of it) is told "quota full: ..." with
    413 Content Too Large and no Retry-After by ShareX's ``POST /api/v1/images``, Chevereto (its own
    shape) and ``POST /api/v1/uploads``; gRPC says RESOURCE_EXHAUSTED with the code quota-exceeded in
    the trailer. They were all 429s, which clients retry in vain. The open-upload limit stays a 429."""
    web = local.web_urls[0]
    key = asyncio.run(new_user_key(local, "fullquota"))
    held = [asyncio.run(create(manager(local), key, QUOTA // 2)).upload_id for _ in range(OPEN)]
    full = f"quota full: {human_bytes(QUOTA)} of {human_bytes(QUOTA)} used ({QUOTA} of them declared by 2 open uploads"
    answers = {
        "sharex": requests.post(f"{web}/api/v1/images?wait=0", files=png(), headers={"X-API-Key": key}, timeout=60),
        "chevereto": requests.post(f"{web}/api/1/upload", params={"key": key}, files={"source": png()["file"]},
                                   timeout=60),
        "resumable": requests.post(f"{web}/api/v1/uploads", json={"filename": "a.png", "size": 1000},
                                   headers={"X-API-Key": key}, timeout=10),
    }
    for surface, a in answers.items():
        assert a.status_code == 413 and "Retry-After" not in a.headers, (surface, a.status_code, a.headers, a.text)
        error = a.json()["error"]
        assert error["code"] == "quota-exceeded" and error["message"].startswith(full), (surface, error)
    assert answers["chevereto"].json()["status_code"] == 413  # Chevereto's shape, as its other errors
    assert asyncio.run(created(local, key, 1000)) == "quota-exceeded"  # gRPC: RESOURCE_EXHAUSTED, the code says why
    # room again, but both open-upload slots taken: that limit is still a 429 with Retry-After
    assert requests.delete(f"{web}/api/v1/uploads/{held[0]}", headers={"X-API-Key": key}, timeout=10).status_code == 204
    asyncio.run(create(manager(local), key, 1000))
    slots = requests.post(f"{web}/api/v1/uploads", json={"filename": "b.png", "size": 1000},
                          headers={"X-API-Key": key}, timeout=10)
    assert slots.status_code == 429 and slots.json()["error"]["code"] == "too-many-open-uploads", slots.text
    assert int(slots.headers["Retry-After"]) > 0


def test_a_users_own_refusals_do_not_use_up_the_address_budget(local: LocalCluster, r: redis.Redis) -> None:
    """A user over their own limits retries 8 times from an address that may start 6 uploads a minute:
    the 429s (before the body: CheckUpload for a one-shot upload, CreateUpload for a resumable one) are
    not counted there, so another user behind that address still uploads. A bad API key still counts:
    a flood of made-up keys stays bounded by the address' budget."""
    web = local.web_urls[0]
    full = asyncio.run(new_user_key(local, "retrying"))
    for _ in range(OPEN):
        asyncio.run(create(manager(local), full, 1000))
    for n in range(8):
        if n % 2:
            refused = requests.post(f"{web}/api/v1/images?wait=0", files=png(), headers={"X-API-Key": full},
                                    timeout=60)
        else:
            refused = requests.post(f"{web}/api/v1/uploads", json={"size": 1000}, headers={"X-API-Key": full},
                                    timeout=10)
        assert refused.status_code == 429 and refused.json()["error"]["code"] in PER_USER, refused.text
    chev = requests.post(f"{web}/api/1/upload", params={"key": full}, files={"source": png()["file"]}, timeout=60)
    assert chev.status_code == 429 and chev.json()["error"]["code"] in PER_USER, chev.text
    assert budget_held(r, IP_KEY) == 0
    neighbour = asyncio.run(new_user_key(local, "neighbour"))
    ok = requests.post(f"{web}/api/v1/images?wait=0", files=png(), headers={"X-API-Key": neighbour}, timeout=60)
    assert ok.status_code == 201, ok.text
    assert budget_held(r, IP_KEY) == 1

    codes = [requests.post(f"{web}/api/v1/images?wait=0", files=png(), headers={"X-API-Key": "made-up"},
                           timeout=60).status_code for _ in range(PER_IP)]
    assert codes == [401] * (PER_IP - 1) + [429], codes


def test_two_basic_headers_from_a_proxy_are_left_alone(local: LocalCluster, r: redis.Redis) -> None:
    """A proxy told to add a Basic header may send two; Basic is a proxy's, never an API key, so they
    are left alone (it was a 400). A repeated Authorization with a Bearer key among them is a 400."""
    key = asyncio.run(new_user_key(local, "behindproxy"))
    me = f"{local.web_urls[0]}/api/v1/me"
    basic = [("Authorization", "Basic dXNlcjpwdw=="), ("Authorization", "Basic b3RoZXI6cHc=")]
    status, said = raw_request(me, "GET", [*basic, ("X-API-Key", key)])
    assert (status, said.get("name"), said.get("via")) == (200, "behindproxy", "api-key"), said
    status, said = raw_request(me, "GET", basic)
    assert status == 401 and said["error"]["message"] == "not logged in", said  # as one Basic header
    for mixed in ([basic[0], ("Authorization", f"Bearer {key}")], [("Authorization", f"Bearer {key}"), basic[0]]):
        status, said = raw_request(me, "GET", mixed)
        assert (status, said["error"]["message"]) == (400, "Authorization was sent more than once: send it once")
    status, said = raw_request(me, "GET", [("X-API-Key", key), ("X-API-Key", key)])
    assert (status, said["error"]["message"]) == (400, "X-API-Key was sent more than once: send it once")


def test_upload_status_and_tus_agree_on_when_an_upload_expires(local: LocalCluster, r: redis.Redis) -> None:
    """``GET /api/v1/uploads/<id>`` ``ticket_expires_at`` and tus ``Upload-Expires`` both say when the ticket
    stops being accepted: its end with its 30 s of leeway (expires_at left it out before it was split from
    ``expires_at``, now the state's end: the owner renews the ticket until then)."""
    key = asyncio.run(new_user_key(local, "expiring"))
    web, auth = local.web_urls[0], {"X-API-Key": key}
    t = requests.post(f"{web}/api/v1/uploads", json={"size": 1000}, headers=auth, timeout=10)
    assert t.status_code == 201, t.text
    head = requests.head(t.json()["upload_url"], timeout=10,
                         headers={"Authorization": f"Bearer {t.json()['ticket']}", "Tus-Resumable": "1.0.0"})
    assert head.status_code == 200, head.headers
    tus = parsedate_to_datetime(head.headers["Upload-Expires"]).timestamp()
    status = requests.get(f"{web}/api/v1/uploads/{t.json()['id']}", headers=auth, timeout=10).json()
    api = datetime.fromisoformat(status["ticket_expires_at"].replace("Z", "+00:00"))
    assert abs(api.timestamp() - tus) <= 1, (status["ticket_expires_at"], head.headers["Upload-Expires"])


def test_uploads_created_at_once_cannot_pass_the_quota_together(local: LocalCluster) -> None:
    """Two CreateUploads at once that each fit the quota but not together: one is admitted, the other
    refused with quota-exceeded (both read the same use before either was recorded, and both passed)."""
    for round_ in range(3):  # a fresh user each round: the race is in the first moments of a user's uploads
        key = asyncio.run(new_user_key(local, f"together{round_}_{os.urandom(3).hex()}"))

        async def both(key: str) -> list[Any]:
            return await asyncio.gather(*(create(manager(local), key, QUOTA * 3 // 5) for _ in range(2)),
                                        return_exceptions=True)

        got = asyncio.run(both(key))
        admitted = [g for g in got if isinstance(g, manager_pb2.CreateUploadResponse)]
        refused = [g for g in got if isinstance(g, grpc.aio.AioRpcError)]
        assert len(admitted) == 1 and len(refused) == 1, got
        assert refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "quota: " in (refused[0].details() or "")
