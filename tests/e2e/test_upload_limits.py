"""Dedup, abandoned-upload TTL, a full staging disk and the Redis-held limits, on a private cluster.

Settings of that cluster: abandoned uploads live 4 s, a user may have 3 unfinished uploads and
start 6 a minute, keep 2.5x ``painting_rgb.png`` of originals, and one IP may start 8 uploads a
minute at the web node.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests

from pixelfox.cli.launcher import LocalCluster, free_port
from pixelfox.client.journal import epoch
from pixelfox.client.uploader import upload_file
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.v1 import manager_pb2, manager_pb2_grpc, upload_pb2
from tests.conftest import CORPUS, wait_http
from tests.e2e.uploadkit import (
    big_png,
    chunk,
    create,
    forget_budget,
    header,
    new_user_key,
    own_cluster,
    refused_stream,
    send,
    upload_stub,
)
from tests.fulldisk import can_mount_tmpfs, on_small_tmpfs

pytestmark = pytest.mark.e2e

PAINTING = CORPUS / "photos" / "painting_rgb.png"
P = PAINTING.stat().st_size if PAINTING.exists() else 676450


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("limits"), upload=1, web=1,
                     PIXELFOX_LIMITS__UPLOAD_TTL_S="4", PIXELFOX_LIMITS__USER_OPEN_UPLOADS="3",
                     PIXELFOX_LIMITS__USER_UPLOADS_PER_MINUTE="6", PIXELFOX_LIMITS__USER_QUOTA_BYTES=str(P * 5 // 2),
                     PIXELFOX_LIMITS__IP_UPLOADS_PER_MINUTE="8", PIXELFOX_SWEEP_INTERVAL_S="1") as c:
        wait_http(f"{c.web_urls[0]}/healthz")
        yield c


def manager(local: LocalCluster) -> str:
    return local.manager_address.split(",")[0]


async def put(local: LocalCluster, key: str, path: Path) -> str:
    async with grpc.aio.insecure_channel(manager(local)) as ch:
        receipt = await upload_file(manager_pb2_grpc.ManagerServiceStub(ch), api_key_metadata(key), path)
    return receipt.image.slug


async def test_same_user_same_bytes_is_the_same_image(local: LocalCluster) -> None:
    alice, bob = await new_user_key(local, "alice"), await new_user_key(local, "bob")
    first = await put(local, alice, PAINTING)
    assert await put(local, alice, PAINTING) == first
    assert await put(local, bob, PAINTING) != first  # another user's copy is their own image


async def test_a_re_upload_is_the_lasting_copy_whatever_expiring_copies_came_first(
    local: LocalCluster, tmp_path: Path
) -> None:
    """Dedup passes over copies that expire: a re-upload without expiration is the user's oldest lasting
    copy (dedup used to take the oldest copy and, when that one expired, make a new image every
    time); an upload with an expiration is always an image of its own, which expires."""
    import redis.asyncio as aioredis

    from nodes.manager import expiry

    key = await new_user_key(local, "ephemeral")
    path = tmp_path / "c6.png"
    big_png(path, 64)
    async with grpc.aio.insecure_channel(manager(local)) as ch:
        stub, md = manager_pb2_grpc.ManagerServiceStub(ch), api_key_metadata(key)

        async def upload(expire_after_s: int = 0) -> str:
            return (await upload_file(stub, md, path, expire_after_s=expire_after_s)).image.slug

        expiring = await upload(600)
        lasting = await upload()
        assert lasting != expiring  # the only copy expires: this one is kept instead
        assert await upload() == lasting
        assert await upload() == lasting
        another = await upload(600)
        assert another not in (expiring, lasting)  # asked to expire: never merged into the kept copy
        assert await upload() == lasting
    r = aioredis.Redis.from_url(local.redis_url)
    try:  # the expiring copies still expire, the lasting one does not
        assert await r.zscore(expiry.KEY, expiring) and await r.zscore(expiry.KEY, another)
        assert await r.zscore(expiry.KEY, lasting) is None
    finally:
        await r.aclose()


async def test_abandoned_upload_expires_and_its_bytes_go(local: LocalCluster) -> None:
    key = await new_user_key(local, "carol")
    data = PAINTING.read_bytes()
    t = await create(manager(local), key, len(data))
    ch, stub = upload_stub(t.upload_address)
    try:
        call = stub.Upload()
        await send(call, [header(t, len(data)), chunk(0, data[:300_000])])
        with pytest.raises(grpc.aio.AioRpcError):
            await call  # ended early: the bytes stay staged for a resume
        staged = local.state / "data" / "staging" / f"{t.upload_id}.part"
        q = await stub.QueryUpload(upload_pb2.QueryUploadRequest(ticket=t.ticket, upload_id=t.upload_id))
        assert q.offset == 300_000 and staged.stat().st_size == 300_000
        deadline = time.monotonic() + 30
        while staged.exists():
            assert time.monotonic() < deadline, "abandoned staged bytes never removed"
            await asyncio.sleep(0.5)
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await stub.QueryUpload(upload_pb2.QueryUploadRequest(ticket=t.ticket, upload_id=t.upload_id))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND and "expired" in (gone.value.details() or "")
        resumed = await refused_stream(t.upload_address, [header(t, len(data)), chunk(300_000, data[300_000:400_000])])
        assert resumed.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await ch.close()


async def test_open_uploads_and_rate_per_user(local: LocalCluster) -> None:
    """3 open uploads, then 429 too-many-open-uploads (not counted in the rate: only admitted uploads
    are); cancelled, the user starts 3 more (6 a minute), and the 7th is 429 rate-limited."""
    from pixelfox import errors

    key = await new_user_key(local, "dave")
    if time.time() % 60 > 40:  # the rate is per clock minute: all of this within one
        await asyncio.sleep(61 - time.time() % 60)
    async with grpc.aio.insecure_channel(manager(local)) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)

        async def cancel(upload_id: str) -> None:
            await stub.AbandonUpload(manager_pb2.AbandonUploadRequest(upload_id=upload_id),
                                     metadata=api_key_metadata(key), timeout=10)

        held = [await create(manager(local), key, 1000) for _ in range(3)]
        for _ in range(4):  # refused: not counted against the 6 a minute
            with pytest.raises(grpc.aio.AioRpcError) as full:
                await create(manager(local), key, 1000)
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "unfinished uploads" in (full.value.details() or "")
            assert dict(full.value.trailing_metadata() or ()).get(errors.ERROR_CODE_KEY) == "too-many-open-uploads"
        for t in held:
            await cancel(t.upload_id)
        for _ in range(3):
            await cancel((await create(manager(local), key, 1000)).upload_id)
        with pytest.raises(grpc.aio.AioRpcError) as fast:
            await create(manager(local), key, 1000)
    assert fast.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "more than 6 uploads in a minute" in (fast.value.details() or ""), fast.value.details()


async def test_refused_uploads_do_not_hold_open_upload_slots(local: LocalCluster, tmp_path: Path) -> None:
    """A user may have 3 unfinished uploads here: 4 files refused as not images, one after another,
    leave none open, so the next real photo goes through (refused uploads used to count as open
    until their state expired, an hour by default, locking a script user out)."""
    from pixelfox import errors

    key = await new_user_key(local, "refused")
    text = tmp_path / "notes.jpg"
    text.write_bytes(b"not an image, whatever the name says\n" * 20)
    for _ in range(4):  # the 4th was a 429 "3 unfinished uploads already"
        with pytest.raises(errors.InvalidImage):
            await put(local, key, text)
    assert await put(local, key, PAINTING)


def test_a_rate_limited_upload_says_when_to_retry(local: LocalCluster) -> None:
    """429 answers carry Retry-After (seconds), from the manager's limit across gRPC to the web node."""
    import redis

    key = asyncio.run(new_user_key(local, "retrier"))
    url = f"{local.web_urls[0]}/api/v1/uploads"
    with redis.Redis.from_url(local.redis_url) as r:  # this address's per-minute budget is not what is tested here
        forget_budget(r, "pixelfox:{limits}:ip:127.0.0.1")
        answers = []
        for _ in range(8):  # 3 open uploads (4 s TTL) and 6 a minute: a 429 comes by the 7th on a slow box
            answers.append(requests.post(url, json={"filename": "a.png", "size": 1000}, timeout=10,
                                         headers={"Authorization": f"Bearer {key}"}))
            if answers[-1].status_code != 201:
                break
        forget_budget(r, "pixelfox:{limits}:ip:127.0.0.1")
    full = answers[-1]
    assert full.status_code == 429 and len(answers) >= 4, [a.text for a in answers]
    message = full.json()["error"]["message"]
    code = full.json()["error"]["code"]
    if "unfinished uploads" in message:  # wait until the oldest open upload expires (4 s TTL)
        assert code == "too-many-open-uploads" and 1 <= int(full.headers["Retry-After"]) <= 5, message
    else:  # over 6 a minute: wait for the next minute
        assert code == "rate-limited", message
        assert "uploads in a minute" in message and 1 <= int(full.headers["Retry-After"]) <= 60, message


async def test_tus_termination_frees_the_open_upload_slot_at_once(local: LocalCluster) -> None:
    import redis.asyncio as aioredis

    key = await new_user_key(local, "tusfrank")
    t = await create(manager(local), key, 1000)
    r = aioredis.Redis.from_url(local.redis_url)
    try:
        async def holders() -> list[bytes]:
            return [k for k in await r.keys("pixelfox:{limits}:open:*") if await r.zscore(k, t.upload_id) is not None]

        assert len(await holders()) == 1  # the user's slot is taken
        auth = {"Authorization": f"Bearer {t.ticket}", "Tus-Resumable": "1.0.0"}
        gone = await asyncio.to_thread(requests.delete, t.upload_url, headers=auth, timeout=10)
        assert gone.status_code == 204
        assert await holders() == []  # freed now, not when the 4 s upload TTL ends
        head = await asyncio.to_thread(requests.head, t.upload_url, headers=auth, timeout=10)
        assert head.status_code == 404
    finally:
        await r.aclose()


def test_the_owner_cancels_open_uploads_without_their_tickets(local: LocalCluster) -> None:
    """Tickets a client lost (a crashed script) held the user's open-upload slots until they ended,
    and the 429 did not say how to free one: ``DELETE /api/v1/uploads/<id>`` frees a slot at once
    and the cancelled ticket is refused with the reason."""
    key = asyncio.run(new_user_key(local, "canceller"))
    web, bearer = local.web_urls[0], {"Authorization": f"Bearer {key}"}
    # this cluster's limit: 3 open uploads; their declared sizes count against the 2.5 P quota, so only the
    # one this test completes is the painting's size
    held = [asyncio.run(create(manager(local), key, size)) for size in (P // 8, P, P // 8)]
    with pytest.raises(grpc.RpcError) as full:
        asyncio.run(create(manager(local), key, P))
    said = full.value.details() or ""
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 unfinished uploads" in said and "DELETE /api/v1/uploads/<id>" in said, said
    assert "list them with GET /api/v1/uploads," in said, said
    assert "its ticket ends (900 s after it was created, plus 30 s for clock skew)" in said, said

    first = held[0]
    other = asyncio.run(new_user_key(local, "bystander"))
    nope = requests.delete(f"{web}/api/v1/uploads/{first.upload_id}", headers={"X-API-Key": other}, timeout=10)
    assert nope.status_code == 404, nope.text  # someone else's upload: not even its existence
    assert requests.delete(f"{web}/api/v1/uploads/{first.upload_id}", timeout=10).status_code == 401
    gone = requests.delete(f"{web}/api/v1/uploads/{first.upload_id}", headers=bearer, timeout=10)
    assert gone.status_code == 204, gone.text
    asyncio.run(create(manager(local), key, P))  # the freed slot is usable at once

    again = requests.delete(f"{web}/api/v1/uploads/{first.upload_id}", headers=bearer, timeout=10)
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"], again.text
    progress = requests.get(f"{web}/api/v1/uploads/{first.upload_id}", headers=bearer, timeout=10).json()
    assert progress["status"] == "abandoned"
    tus = {"Authorization": f"Bearer {first.ticket}", "Tus-Resumable": "1.0.0"}
    head = requests.head(first.upload_url, headers=tus, timeout=10)
    assert head.status_code == 401
    patch = requests.patch(first.upload_url, data=PAINTING.read_bytes(), timeout=30, headers={
        **tus, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert patch.status_code == 401 and "cancelled by its owner" in patch.json()["error"]["message"], patch.text

    done = held[1]  # a completed upload has nothing to cancel
    ok = requests.patch(done.upload_url, data=PAINTING.read_bytes(), timeout=60, headers={
        "Authorization": f"Bearer {done.ticket}", "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert ok.status_code == 204, ok.text
    late = requests.delete(f"{web}/api/v1/uploads/{done.upload_id}", headers=bearer, timeout=10)
    assert late.status_code == 409 and "complete" in late.json()["error"]["message"], late.text
    assert requests.delete(f"{web}/api/v1/uploads/not-an-id", headers=bearer, timeout=10).status_code == 404


def test_a_cancel_stops_a_patch_still_sending_and_a_failed_upload_keeps_its_reason(local: LocalCluster,
                                                                                  tmp_path: Path) -> None:
    """A tester cancelled an upload while its PATCH was still sending: the bytes kept coming, the
    file was stored on both storage nodes with no image pointing at it, and the PATCH ended with
    "ticket was already used". It now stops at its next commit (0.5 s) with the reason, and
    nothing is stored. A failed upload (not an image) is not "open": DELETE says 409 and the
    ticket keeps answering why it failed (it was 204, and the reason was lost)."""
    key = asyncio.run(new_user_key(local, "midway"))
    web, bearer = local.web_urls[0], {"Authorization": f"Bearer {key}"}
    digest = big_png(tmp_path / "midway.png", 400)  # new bytes (~480 KB): nothing else stored them
    data = (tmp_path / "midway.png").read_bytes()
    t = asyncio.run(create(manager(local), key, len(data)))
    tus = {"Authorization": f"Bearer {t.ticket}", "Tus-Resumable": "1.0.0"}
    cancelled: list[int] = []

    def slow_body() -> Iterator[bytes]:
        for n, at in enumerate(range(0, len(data), 32_768)):
            if n == 4:  # 128 KiB sent: the owner cancels, the client goes on sending
                cancelled.append(requests.delete(f"{web}/api/v1/uploads/{t.upload_id}", headers=bearer,
                                                 timeout=10).status_code)
            yield data[at:at + 32_768]
            time.sleep(0.1)

    try:
        r = requests.patch(t.upload_url, data=slow_body(), timeout=60, headers={
            **tus, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
        said = (r.status_code, r.json()["error"]["message"])
    except requests.ConnectionError:  # the node answered and closed while the body was still coming
        said = (401, "the upload was cancelled by its owner (the answer was cut)")
    assert cancelled == [204]
    assert said[0] == 401 and "cancelled by its owner" in said[1], said
    head = requests.head(t.upload_url, headers=tus, timeout=10)
    assert head.status_code == 401
    progress = requests.get(f"{web}/api/v1/uploads/{t.upload_id}", headers=bearer, timeout=10).json()
    assert progress["status"] == "abandoned" and progress["offset"] < len(data) and progress["image"] is None, progress
    mine = requests.get(f"{web}/api/v1/images", headers=bearer, timeout=10).json()["images"]
    assert mine == []  # nothing was stored as an image
    assert list(local.root.rglob(f"*{digest}*")) == []  # no original on any storage node

    bad = asyncio.run(create(manager(local), key, 5000))
    failed = requests.patch(bad.upload_url, data=os.urandom(5000), timeout=30, headers={
        "Authorization": f"Bearer {bad.ticket}", "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert failed.status_code == 415, failed.text
    late = requests.delete(f"{web}/api/v1/uploads/{bad.upload_id}", headers=bearer, timeout=10)
    assert late.status_code == 409 and "failed" in late.json()["error"]["message"], late.text
    again = requests.head(bad.upload_url, headers={"Authorization": f"Bearer {bad.ticket}", "Tus-Resumable": "1.0.0"},
                          timeout=10)
    assert again.status_code == 415  # still the reason it failed
    assert requests.get(f"{web}/api/v1/uploads/{bad.upload_id.lower()}", headers=bearer,  # ids in any case
                        timeout=10).json()["status"] == "failed"


async def test_an_upload_receiving_bytes_keeps_its_open_upload_slot(local: LocalCluster) -> None:
    """Uploads live 4 s here after their last chunk, tickets 900 s: an upload still receiving bytes after
    those 4 s keeps counting as open (each commit pushes its slot out with its state), up to its
    ticket's end and no further (its slot used to end 4 s after CreateUpload, whatever came after)."""
    import redis.asyncio as aioredis

    from pixelfox import tickets
    from pixelfox.uploadstate import open_uploads_key

    key = await new_user_key(local, "steady")
    data = PAINTING.read_bytes()
    t = await create(manager(local), key, len(data))
    ticket = tickets.verify(tickets.derive_key(local.secret), t.ticket)
    slot = open_uploads_key(ticket.user_id)
    r = aioredis.Redis.from_url(local.redis_url)
    ch, stub = upload_stub(t.upload_address)
    try:
        assert await r.zscore(slot, t.upload_id)  # counted from CreateUpload on
        call = stub.Upload()
        await call.write(header(t, len(data)))
        for n in range(12):  # 6 s of a slow client, a piece every half second
            await call.write(chunk(n * 10_000, data[n * 10_000:(n + 1) * 10_000]))
            await asyncio.sleep(0.5)
        score = await r.zscore(slot, t.upload_id)
        assert score is not None and time.time() + 2 < score <= ticket.expires_at + tickets.LEEWAY_S
        await call.write(chunk(120_000, data[120_000:]))
        await call.done_writing()
        assert (await call).image.slug
        assert await r.zscore(slot, t.upload_id) is None  # complete: no longer open
    finally:
        await ch.close()
        await r.aclose()


async def test_quota(local: LocalCluster) -> None:
    key = await new_user_key(local, "erin")
    with pytest.raises(grpc.aio.AioRpcError) as big:
        await create(manager(local), key, P * 3)
    assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "quota" in (big.value.details() or "")
    await put(local, key, PAINTING)
    await create(manager(local), key, P)  # P + P fits in 2.5 P
    with pytest.raises(grpc.aio.AioRpcError) as over:
        await create(manager(local), key, 2 * P)  # P used + 2 P does not
    assert "quota: " in (over.value.details() or "")
    await create(manager(local), key, P // 4)  # P stored + P and P/4 open: 2.25 P
    with pytest.raises(grpc.aio.AioRpcError) as held:  # the open uploads count (it passed on P + P/2)
        await create(manager(local), key, P // 2)
    assert held.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "declared by 2 open uploads" in (held.value.details() or "")


async def test_a_re_upload_at_the_limits_is_the_image_the_user_has(local: LocalCluster, tmp_path: Path) -> None:
    """A user at their quota, with every open-upload slot taken, puts a file they already have: CreateUpload
    answers with that image from the declared SHA-256 (no quota, slot or rate token needed; it used to be
    refused with quota-exceeded, the declared size counted though the upload adds nothing)."""
    key = await new_user_key(local, "holly")
    first = await put(local, key, PAINTING)
    filler = tmp_path / "filler.png"
    big_png(filler, 550)  # ~0.9 MB: with the painting, ~2.34 P of the 2.5 P quota
    await put(local, key, filler)
    for _ in range(3):  # every open-upload slot (3)
        await create(manager(local), key, 1)
    with pytest.raises(grpc.aio.AioRpcError) as full:
        await create(manager(local), key, P)
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    async with grpc.aio.insecure_channel(manager(local)) as ch:
        receipt = await upload_file(manager_pb2_grpc.ManagerServiceStub(ch), api_key_metadata(key), PAINTING)
    assert (receipt.deduplicated, receipt.image.slug, receipt.upload_id) == (True, first, "")
    with pytest.raises(grpc.aio.AioRpcError) as still:  # the limits still hold for anything new
        await create(manager(local), key, P)
    assert still.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_per_ip_rate_at_the_web_node(local: LocalCluster) -> None:
    keys = [asyncio.run(new_user_key(local, f"ip{i}")) for i in range(14)]
    answers = [requests.post(f"{local.web_urls[0]}/api/v1/uploads", json={"filename": "a.png", "size": 10},
                             headers={"Authorization": f"Bearer {k}"}, timeout=10) for k in keys]
    codes = [r.status_code for r in answers]
    assert codes.count(201) >= 8 and 429 in codes
    refused = next(r for r in answers if r.status_code == 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60  # when this address's minute budget refills


async def test_manager_progress_for_deduplicated_upload(local: LocalCluster) -> None:
    key = await new_user_key(local, "gina")
    first = await put(local, key, PAINTING)
    t = await create(manager(local), key, P)
    async with grpc.aio.insecure_channel(manager(local)) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        uch, ustub = upload_stub(t.upload_address)
        try:
            call = ustub.Upload()
            data = PAINTING.read_bytes()
            await call.write(header(t, len(data)))
            for off in range(0, len(data), 256 * 1024):
                await call.write(chunk(off, data[off:off + 256 * 1024]))
            await call.done_writing()
            receipt = await call
        finally:
            await uch.close()
        assert receipt.image.slug == first
        p = await stub.GetUpload(manager_pb2.GetUploadRequest(upload_id=t.upload_id),
                                 metadata=api_key_metadata(key), timeout=10)
        assert p.status == "complete" and p.image.slug == first


@pytest.fixture
def full_node(local: LocalCluster, tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """An extra upload node whose staging is a 1 MiB tmpfs in its own mount namespace: (pid, port, staging)."""
    staging = tmp_path / "small-staging"
    staging.mkdir()
    if not can_mount_tmpfs(staging):
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (unshare -rm)")
    port = free_port()
    env = local._env("upload-full", PIXELFOX_GRPC__PORT=str(port), PIXELFOX_REDIS__URL=local.redis_url,
                     PIXELFOX_STAGING_DIR=str(staging), PIXELFOX_HTTP__PORT=str(free_port()))
    with (tmp_path / "node.log").open("wb") as log:
        node = subprocess.Popen(on_small_tmpfs(staging, "1m", [sys.executable, "-m", "nodes.upload"]), env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=local.root)
        try:
            yield node.pid, port, staging
        finally:
            node.terminate()
            node.wait(15)


async def test_full_staging_disk_is_resource_exhausted_and_leaves_nothing(
    local: LocalCluster, tmp_path: Path, full_node: tuple[int, int, Path]
) -> None:
    pid, port, staging = full_node
    path = tmp_path / "big.png"
    big_png(path, 700)  # ~1.5 MB: more than the 1 MiB staging, less than the quota
    data = path.read_bytes()
    key = await new_user_key(local, "frank")
    ch, stub = upload_stub(f"127.0.0.1:{port}")
    try:
        await asyncio.wait_for(ch.channel_ready(), 30)
        t = await create(manager(local), key, len(data))  # after the node is up: the upload lives 4 s here
        # the node runs out of room after 1 MiB, while the rest is still being written
        full = await refused_stream(f"127.0.0.1:{port}", [
            header(t, len(data)), *(chunk(off, data[off:off + 256 * 1024]) for off in range(0, len(data), 256 * 1024))])
        assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "staging is full" in (full.details() or "")
        inside = Path(f"/proc/{pid}/root") / staging.relative_to("/")
        assert os.listdir(inside) == []  # the node's view of its tmpfs: no partial file
        q = await stub.QueryUpload(upload_pb2.QueryUploadRequest(ticket=t.ticket, upload_id=t.upload_id))
        assert q.offset == 0  # the upload can start again once there is room
    finally:
        await ch.close()


#: the clock-skew leeway of :func:`short_tickets` (PIXELFOX_LIMITS__TICKET_LEEWAY_S; 30 s by default): more
#: than the 2 s the Retry-After checks allow, so a refusal that left it out would fail them
SHORT_LEEWAY_S = 5


@pytest.fixture(scope="module")
def short_tickets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Tickets valid 1 s (accepted 6 s with the leeway cut to :data:`SHORT_LEEWAY_S`), uploads kept an hour,
    3 open uploads a user."""
    with own_cluster(tmp_path_factory.mktemp("short-tickets"), upload=1, web=1,
                     PIXELFOX_LIMITS__TICKET_TTL_S="1", PIXELFOX_LIMITS__TICKET_LEEWAY_S=str(SHORT_LEEWAY_S),
                     PIXELFOX_LIMITS__USER_OPEN_UPLOADS="3") as c:
        wait_http(f"{c.web_urls[0]}/healthz")
        yield c


def test_dead_tickets_free_their_open_upload_slots_when_they_expire(short_tickets: LocalCluster) -> None:
    """Resumable uploads nobody continues count as open until their ticket can no longer be used, not
    for the hour their state is kept: the 429 (every upload path's, one-shot ones too) says when the
    first one frees, and from then on the user uploads again (they used to be locked out for an hour,
    told Retry-After 3600)."""
    from pixelfox import tickets

    web_url = short_tickets.web_urls[0]
    key = asyncio.run(new_user_key(short_tickets, "hoarder"))
    auth = {"Authorization": f"Bearer {key}"}
    shot = PAINTING.read_bytes()
    opened = [requests.post(f"{web_url}/api/v1/uploads", json={"size": 1000}, headers=auth, timeout=10)
              for _ in range(3)]
    assert [o.status_code for o in opened] == [201] * 3
    ticket_key = tickets.derive_key(short_tickets.secret)
    ends = [tickets.usable_until(tickets.verify(ticket_key, o.json()["ticket"]).expires_at, SHORT_LEEWAY_S)
            for o in opened]

    refusals = [
        requests.post(f"{web_url}/api/v1/uploads", json={"size": 1000}, headers=auth, timeout=10),
        requests.post(f"{web_url}/api/v1/images", files={"file": ("s.png", shot, "image/png")}, headers=auth,
                      timeout=60),
        requests.post(f"{web_url}/api/1/upload", files={"source": ("s.png", shot, "image/png")},
                      data={"key": key}, timeout=60),
    ]
    for refused in refusals:
        assert refused.status_code == 429, refused.text
        wait = int(refused.headers["Retry-After"])  # when the first ticket ends, not the state's hour
        assert abs(wait - (min(ends) - time.time())) <= 2, refused.headers
        assert f"the next frees in {wait} s" in refused.json()["error"]["message"], refused.text

    time.sleep(max(0.0, min(ends) - time.time()) + 1)  # the tickets are dead: nothing can use them unrenewed
    status = requests.get(f"{web_url}/api/v1/uploads/{opened[0].json()['id']}", headers=auth, timeout=10)
    assert status.json()["status"] == "paused", status.text  # its owner may renew it: then it counts again
    one_shot = requests.post(f"{web_url}/api/v1/images?wait=0", files={"file": ("s.png", shot, "image/png")},
                             headers=auth, timeout=60)
    assert one_shot.status_code in (200, 201), one_shot.text
    chevereto = requests.post(f"{web_url}/api/1/upload", files={"source": ("s.png", shot, "image/png")},
                              data={"key": key}, timeout=60)
    assert chevereto.status_code == 200, chevereto.text
    assert requests.post(f"{web_url}/api/v1/uploads", json={"size": 1000}, headers=auth,
                         timeout=10).status_code == 201


async def test_a_stream_admitted_with_a_live_ticket_completes_after_it_ends(short_tickets: LocalCluster) -> None:
    """A slow upload outlives its ticket mid-stream: the stream the upload node admitted while the
    ticket lived completes (the manager refused it at the end, "upload ticket expired", with the
    original already stored); a new stream is refused.

    The manager's ticket (1 s here) is accepted :data:`SHORT_LEEWAY_S` more, so the slow client sends
    for ~7 s."""
    from pixelfox import tickets

    key = await new_user_key(short_tickets, "slowpoke")
    data = PAINTING.read_bytes()
    t = await create(short_tickets.manager_address.split(",")[0], key, len(data))
    claims = tickets.verify(tickets.derive_key(short_tickets.secret), t.ticket, leeway_s=SHORT_LEEWAY_S)
    end = tickets.usable_until(claims.expires_at, SHORT_LEEWAY_S)
    assert epoch(t.expires_at) == end  # the last second an upload node accepts it, as CreateUpload says
    ch, stub = upload_stub(t.upload_address)
    try:
        call = stub.Upload()
        await call.write(header(t, len(data)))
        offset = 0
        while time.time() < end + 1.5:  # a slow client: a piece every 1.5 s until the ticket is dead
            await call.write(chunk(offset, data[offset:offset + 10_000]))
            offset += 10_000
            await asyncio.sleep(1.5)
        await call.write(chunk(offset, data[offset:]))
        await call.done_writing()
        done = await call
        assert done.image.slug and done.image.sha256 == hashlib.sha256(data).hexdigest()
        again = stub.Upload()  # resuming is what the ticket's end stops
        await again.write(header(t, len(data)))
        await again.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await again
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "expired" in (refused.value.details() or ""), refused.value.details()
    finally:
        await ch.close()
