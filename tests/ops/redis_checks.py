"""Checks shared by the Redis mode tests (tests/ops/test_redis_modes.py, tests/ops/test_redis_cluster.py).

Each takes a connected client (what :func:`pixelfox.redisx.connect` returns for the mode
under test) and drives the real PixelFox code that talks to Redis, asserting real values.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp_session import get_session, session_middleware

from nodes.manager.registry import NodeRecord, Registry
from pixelfox import readmodel
from pixelfox.leases import Lease
from pixelfox.queue.streams import BATCH, DEAD, DELAYED, KNOWN, STREAM, JobQueue
from pixelfox.session_index import (
    end_other_sessions,
    end_sessions_of_disabled,
    ended_key,
    forget_ended_sessions,
    index_key,
)
from pixelfox.uploadstate import UploadStates
from pixelfox.v1 import common_pb2
from web.app import create_app
from web.config import WebSettings
from web.sessions import COOKIE_NAME, SessionStore, logout, session_key


async def check_read_model(r: Any) -> None:
    """The image read model against the placement token (one MGET, a Lua replace over one key of
    the ``{img}`` tag): an image cached under another placement reads as stale and is replaced in
    place; a marker written meanwhile is never overwritten."""
    img = common_pb2.Image(slug="rmcheck", status=common_pb2.IMAGE_STATUS_READY, visibility="public", title="a")
    await r.delete(readmodel.key("rmcheck"), readmodel.PLACEMENT_KEY)
    miss = await readmodel.read(r, "rmcheck")
    assert miss is None and not await readmodel.fill(r, img, miss)  # no token yet: nothing cached
    await readmodel.set_placement(r, b"aaaa")
    assert await readmodel.fill(r, img, await readmodel.read(r, "rmcheck"))
    hit = await readmodel.read(r, "rmcheck")
    assert hit is not None and hit.kind == "image" and hit.image == img

    await readmodel.set_placement(r, b"bbbb")  # a storage node went down or moved
    stale = await readmodel.read(r, "rmcheck")
    assert stale is not None and stale.kind == "stale" and stale.placement == b"bbbb"
    img.title = "b"
    assert await readmodel.fill(r, img, stale)
    hit = await readmodel.read(r, "rmcheck")
    assert hit is not None and hit.kind == "image" and hit.image is not None and hit.image.title == "b"

    await readmodel.set_placement(r, b"cccc")
    stale = await readmodel.read(r, "rmcheck")
    await readmodel.mark_deleted(r, "rmcheck")  # the manager's marker lands between read and fill
    assert not await readmodel.fill(r, img, stale)
    assert await readmodel.read(r, "rmcheck") == readmodel.Entry("deleted")
    await r.delete(readmodel.key("rmcheck"), readmodel.PLACEMENT_KEY)


async def check_leases_registry_and_queue(r: Any) -> None:
    """Leases (SET NX + epoch, Lua renew/release), the registry with its maintenance set, a
    one-slot MULTI, the job queue (MULTI enqueue/ack, XREADGROUP over both lanes, XAUTOCLAIM
    take-over, retry into the delayed set and the Lua promoter, dead letters) and the upload
    state (MULTI create, Lua commit over the state and lock keys)."""
    assert await r.ping()

    lease = Lease(r, "modes-test", ttl_s=5, owner="m1")
    assert await lease.acquire() and lease.epoch >= 1
    first_epoch = lease.epoch
    assert await lease.renew() and lease.held
    assert await lease.holder() == lease.owner
    rival = Lease(r, "modes-test", ttl_s=5, owner="m2")
    assert not await rival.acquire() and not await rival.renew()
    await lease.release()
    assert await lease.holder() == ""
    assert await rival.acquire() and rival.epoch == first_epoch + 1  # the fencing token moved on
    await rival.release()

    reg = Registry(r, node_timeout_s=5)
    await reg.upsert(NodeRecord(node_id="upload9", role=common_pb2.NODE_ROLE_UPLOAD, grpc_address="x:1"))
    await reg.set_maintenance("upload9", True)
    (rec,) = [n for n in await reg.all() if n.node_id == "upload9"]
    assert rec.maintenance and not reg.healthy(rec)
    assert await reg.heartbeat("upload9", 1, 2, 3, common_pb2.NODE_STATUS_ACTIVE)  # the Lua update, one key
    assert await reg.leave("upload9")  # a clean stop: a later heartbeat must register again
    assert not await reg.heartbeat("upload9", 1, 2, 3, common_pb2.NODE_STATUS_ACTIVE)

    # a MULTI over two keys of one tag (what the job queue does)
    await r.delete("pixelfox:{t}:stream")
    async with r.pipeline(transaction=True) as pipe:
        pipe.xadd("pixelfox:{t}:stream", {"a": "1"})
        pipe.xlen("pixelfox:{t}:stream")
        _, n = await pipe.execute()
    assert n == 1

    await r.delete(STREAM, BATCH, DELAYED, DEAD, KNOWN)  # one slot: a multi-key DEL is fine on a cluster
    q = JobQueue(r, "m1", lease_s=60, backoff_base_s=0.05, backoff_cap_s=0.05, max_attempts=2)
    await q.ensure_group()
    eid = await q.enqueue("img-a")
    await q.enqueue("img-b", lane="batch")
    assert await q.known(["img-a", "img-b", "img-c"]) == [True, True, False]
    assert await q.depth() == 2
    jobs = await q.take(2, block_ms=0)
    assert [(j.entry_id, j.image_id, j.lane) for j in jobs] == [(eid, "img-a", "interactive"),
                                                                (jobs[1].entry_id, "img-b", "batch")]
    assert set(await q.pending("interactive")) == {eid}
    await q.ack(jobs[0])
    assert await q.known(["img-a"]) == [False] and await q.pending("interactive") == {}
    assert await q.take(1, block_ms=100) == []  # XREADGROUP BLOCK over both lanes

    delay = await q.retry(jobs[1], "boom")
    assert delay is not None and 0 < delay <= 0.05
    assert [(j.image_id, j.attempt) for j, _ in await q.delayed()] == [("img-b", 1)]
    await asyncio.sleep(delay + 0.05)
    assert await q.promote_due() == 1  # the Lua mover: delayed set -> batch lane
    (again,) = await q.take(1, block_ms=0)
    assert (again.image_id, again.attempt, again.lane, again.reason) == ("img-b", 1, "batch", "boom")

    other = JobQueue(r, "m2", lease_s=0.05)
    await asyncio.sleep(0.1)  # m1 "died" holding img-b: its pending entry goes idle past m2's lease
    (taken,) = await other.take(1, block_ms=0)
    assert (taken.entry_id, taken.image_id) == (again.entry_id, "img-b")
    assert await q.retry(taken, "boom again") is None  # max_attempts reached: dead letters
    (dead,) = await q.dead()
    assert (dead.image_id, dead.attempt, dead.reason) == ("img-b", 2, "boom again")
    assert await q.known(["img-b"]) == [False] and await q.depth() == 0

    states = UploadStates(r, ttl_s=60)
    await states.create("up1", size=100, user_id="u1")
    token = await states.lock("up1", "upload1")
    await states.commit("up1", token, 40, probed=True)
    await states.unlock("up1", token)
    st = await states.get("up1")
    assert st is not None and (st.offset, st.size, st.user_id, st.probed) == (40, 100, "u1", True)


def _session_app(r: Any) -> web.Application:
    """A small aiohttp app on the real :class:`web.sessions.SessionStore` over ``r``."""

    async def put(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["colour"] = request.query["colour"]
        if "user" in request.query:
            session["user_id"] = request.query["user"]
        return web.json_response({})

    async def read(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({"id": session.identity, "colour": session.get("colour")})

    async def out(request: web.Request) -> web.Response:
        await logout(request)
        return web.json_response({})

    app = web.Application(middlewares=[session_middleware(SessionStore(r, max_age=600, secure=False))])
    app.router.add_get("/put", put)
    app.router.add_get("/read", read)
    app.router.add_post("/logout", out)
    return app


def _cookie(c: TestClient[Any, Any]) -> str:
    return next((m.value for m in c.session.cookie_jar if m.key == COOKIE_NAME), "")


async def check_web_sessions(r: Any) -> None:
    """The web node's sessions on ``r``: save, read back with the cookie, the per-user index,
    :func:`pixelfox.session_index.end_other_sessions`, and logout deleting the Redis key."""
    async with TestClient(TestServer(_session_app(r))) as a, TestClient(TestServer(_session_app(r))) as b:
        assert (await a.get("/put", params={"colour": "teal", "user": "u-web"})).status == 200
        sid = _cookie(a)  # a new session gets its id when it is saved
        assert len(sid) == 43
        raw = await r.get(session_key(sid))
        assert raw is not None and json.loads(raw)["session"] == {"colour": "teal", "user_id": "u-web"}
        assert 0 < await r.ttl(session_key(sid)) <= 600
        # a second request with the cookie reads the value back from Redis
        assert await (await a.get("/read")).json() == {"id": sid, "colour": "teal"}

        # two more sessions of the same user (another browser), all in the user's index
        others = []
        for colour in ("red", "blue"):
            b.session.cookie_jar.clear()
            assert (await b.get("/put", params={"colour": colour, "user": "u-web"})).status == 200
            others.append(_cookie(b))
        indexed = {m.decode() for m in await r.smembers(index_key("u-web"))}
        assert indexed == {sid, *others} and len(indexed) == 3
        assert await end_other_sessions(r, "u-web", keep=sid) == 2
        assert [await r.exists(session_key(o)) for o in others] == [0, 0]
        assert {m.decode() for m in await r.smembers(index_key("u-web"))} == {sid}
        assert await (await b.get("/read")).json() == {"id": None, "colour": None}  # b's session ended
        assert await (await a.get("/read")).json() == {"id": sid, "colour": "teal"}  # the kept one lives

        # logout: the Redis key is gone and the cookie no longer finds a session
        assert (await a.post("/logout")).status == 200
        assert await r.exists(session_key(sid)) == 0
        a.session.cookie_jar.update_cookies({COOKIE_NAME: sid})
        assert await (await a.get("/read")).json() == {"id": None, "colour": None}

        # a disabled user's sessions end with a marker in their place, which enabling removes
        b.session.cookie_jar.clear()
        assert (await b.get("/put", params={"colour": "grey", "user": "u-off"})).status == 200
        off = _cookie(b)
        assert await end_sessions_of_disabled(r, "u-off") == 1
        assert (await r.exists(session_key(off)), await r.get(ended_key(off))) == (0, b"account-disabled")
        assert 0 < await r.ttl(ended_key(off)) <= 600
        await forget_ended_sessions(r, "u-off")
        assert await r.exists(ended_key(off)) == 0


async def check_web_app_factory(url: str, r: Any) -> None:
    """:func:`web.app.create_app` with ``url``: a page with a form stores its session (and CSRF token)
    in that Redis, the next request reads it back, and /readyz sees Redis up (no manager runs here)."""
    settings = WebSettings(node_id="webmodes", cluster={"manager": "127.0.0.1:1", "secret": "s"},  # type: ignore[arg-type]
                           redis={"url": url}, metrics_port=-1)  # type: ignore[arg-type]
    async with TestClient(TestServer(create_app(settings))) as c:
        page = await c.get("/login")
        assert page.status == 200
        sid = _cookie(c)
        raw = await r.get(session_key(sid))
        assert raw is not None
        token = json.loads(raw)["session"]["csrf"]
        assert len(token) == 43 and token in await page.text()
        assert token in await (await c.get("/login")).text()  # the same session, read back
        ready = await c.get("/readyz")
        assert ready.status == 503 and await ready.json() == {"status": "unavailable", "redis": "ok", "manager": "down"}
