"""Resumable gRPC uploads against real nodes: cut streams, a killed upload node, the protocol rules.

The cut test runs on the shared session cluster through a TCP proxy we abort mid-upload; the
kill test SIGKILLs the upload node holding the upload in its own 2-upload-node cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
import requests

from nodes.upload import liveness
from pixelfox import uploadstate
from pixelfox.cli.launcher import LocalCluster
from pixelfox.client.uploader import upload_file
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.v1 import common_pb2, manager_pb2_grpc, upload_pb2
from tests.conftest import ClusterHandle
from tests.e2e.uploadkit import (
    Proxy,
    big_png,
    chunk,
    create,
    header,
    own_cluster,
    refused_stream,
    send,
    upload_stub,
    wait_ready,
)

pytestmark = pytest.mark.e2e

SIDE = 1400  # ~5.9 MB PNG: ~23 chunks of 256 KiB


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "noise.png"
    return path, big_png(path, SIDE)


async def test_put_resumes_after_the_connection_is_cut(cluster: ClusterHandle, big: tuple[Path, str]) -> None:
    path, sha = big
    size = path.stat().st_size
    proxy = Proxy()
    front = await proxy.start()

    def dial(address: str) -> str:
        proxy.target = address
        return front

    cuts = []

    def progress(sent: int, total: int) -> None:
        if not cuts and sent > total * 0.4:
            cuts.append(sent)
            proxy.cut()

    async with grpc.aio.insecure_channel(cluster.manager_address) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        img = (await upload_file(stub, api_key_metadata(cluster.admin_api_key), path, progress=progress, dial=dial,
                                 max_stall_s=30)).image
    await proxy.close()
    assert cuts, "the connection was never cut"
    assert proxy.accepted >= 2  # a second connection carried the rest
    assert proxy.bytes_up < size * 1.6, "the upload started over instead of resuming"
    done = await wait_ready(cluster.manager_address, cluster.admin_api_key, img.slug)
    assert done.status == common_pb2.IMAGE_STATUS_READY
    assert done.sha256 == sha and done.bytes == size


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # the default writer-lock TTL (10 s): a resume must not wait for a killed node's lock to expire
    with own_cluster(tmp_path_factory.mktemp("two"), upload=2) as local:
        yield local


async def test_put_moves_to_another_node_when_its_node_is_killed(two_nodes: LocalCluster,
                                                                 big: tuple[Path, str]) -> None:
    local = two_nodes
    path, sha = big
    key = await local.ensure_admin()
    r = aioredis.from_url(local.redis_url)
    killed: list[str] = []
    killed_at: list[float] = []
    pending: list[asyncio.Task[None]] = []

    async def kill_writer() -> None:
        for _ in range(200):
            async for k in r.scan_iter(match="pixelfox:{upload:*}:lock"):
                owner = (await r.get(k) or b"").decode().split(":")[0]
                if owner:
                    local.child(owner).proc.kill()  # SIGKILL: no drain, no goodbye
                    killed.append(owner)
                    killed_at.append(time.monotonic())
                    return
            await asyncio.sleep(0.01)

    def progress(sent: int, total: int) -> None:
        if not pending and sent > total * 0.4:
            pending.append(asyncio.get_running_loop().create_task(kill_writer()))

    async with grpc.aio.insecure_channel(local.manager_address) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        img = (await upload_file(stub, api_key_metadata(key), path, progress=progress, max_stall_s=45)).image
    await asyncio.gather(*pending)
    assert killed, "no upload node was killed"
    resumed_s = time.monotonic() - killed_at[0]
    print(f"upload node SIGKILLed mid-upload -> upload finished on the other node: {resumed_s:.1f} s")
    # the other node takes the dead node's writer lock over: the resume waited out its 10 s TTL
    assert resumed_s < 6.0
    st = await r.hgetall(uploadstate.state_key(await _upload_id(r, img.slug)))
    assert st[b"status"] == b"complete"
    assert st[b"node"].decode() != killed[0]  # another node finished it
    done = await wait_ready(local.manager_address, key, img.slug)
    assert done.status == common_pb2.IMAGE_STATUS_READY
    assert done.sha256 == sha
    assert not list((local.state / "data" / "staging").glob("*.part"))
    await r.aclose()


async def _upload_id(r: aioredis.Redis, slug: str) -> str:
    async for k in r.scan_iter(match="pixelfox:{upload:*}:state"):
        if (await r.hget(k, "slug") or b"").decode() == slug:
            return k.decode().split(":")[2].rstrip("}")
    raise AssertionError(f"no upload state for {slug}")


async def test_offsets_duplicates_lock_query_and_reuse(cluster: ClusterHandle, corpus: Path) -> None:
    data = (corpus / "photos" / "painting_rgb.png").read_bytes()
    t = await create(cluster.manager_address, cluster.admin_api_key, len(data))
    ch, stub = upload_stub(t.upload_address)
    step = 64 * 1024
    try:
        # first stream: two chunks, then a duplicate of the first (idempotent), then a gap
        call = stub.Upload()
        await call.write(header(t, len(data)))
        await call.write(chunk(0, data[:step]))
        await call.write(chunk(step, data[step:2 * step]))
        await call.write(chunk(0, data[:step]))  # duplicate: acknowledged, not written again
        r = aioredis.from_url(cluster.redis_url)
        for _ in range(100):  # until the node has taken the first stream's chunks (and holds its lock)
            if int(await r.hget(uploadstate.state_key(t.upload_id), "offset") or 0) == 2 * step:
                break
            await asyncio.sleep(0.05)
        await r.aclose()
        with pytest.raises(grpc.aio.AioRpcError) as querying:  # QueryUpload waits for the writer to finish
            await stub.QueryUpload(upload_pb2.QueryUploadRequest(ticket=t.ticket, upload_id=t.upload_id))
        assert querying.value.code() == grpc.StatusCode.ABORTED
        # a second stream for the same upload while the first holds the lock
        other = stub.Upload()
        await send(other, [header(t, len(data))])
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await other
        assert busy.value.code() == grpc.StatusCode.ABORTED
        await send(call, [chunk(3 * step, data[3 * step:4 * step])])  # beyond the committed offset
        with pytest.raises(grpc.aio.AioRpcError) as gap:
            await call
        assert gap.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"committed offset is {2 * step}" in (gap.value.details() or "")

        q = await stub.QueryUpload(upload_pb2.QueryUploadRequest(ticket=t.ticket, upload_id=t.upload_id))
        assert (q.offset, q.size, q.complete) == (2 * step, len(data), False)

        # resume with a chunk straddling the committed offset, then the rest
        call = stub.Upload()
        await call.write(header(t, len(data), hashlib.sha256(data).hexdigest()))
        await call.write(chunk(step, data[step:3 * step]))
        for off in range(3 * step, len(data), step):
            await call.write(chunk(off, data[off:off + step]))
        await call.done_writing()
        receipt = await call
        assert receipt.image.sha256 == hashlib.sha256(data).hexdigest()

        q = await stub.QueryUpload(upload_pb2.QueryUploadRequest(ticket=t.ticket, upload_id=t.upload_id))
        assert q.complete and q.image_slug == receipt.image.slug

        # the ticket is single-use: no new stream after completion
        again = stub.Upload()
        await send(again, [header(t, len(data))])
        with pytest.raises(grpc.aio.AioRpcError) as used:
            await again
        assert used.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "already used" in (used.value.details() or "")
    finally:
        await ch.close()


async def test_a_paused_stream_has_its_bytes_recorded(cluster: ClusterHandle, corpus: Path) -> None:
    """Offsets go to Redis every 4 MiB or 0.5 s, not per chunk: while the client pauses with
    fewer bytes than that in flight, the node records them anyway (within about a second), so
    a node that dies during the pause loses none of them."""
    data = (corpus / "photos" / "painting_rgb.png").read_bytes()
    t = await create(cluster.manager_address, cluster.admin_api_key, len(data))
    ch, stub = upload_stub(t.upload_address)
    r = aioredis.from_url(cluster.redis_url)
    step = 64 * 1024
    try:
        call = stub.Upload()
        await call.write(header(t, len(data)))
        for off in range(0, 3 * step, step):
            await call.write(chunk(off, data[off:off + step]))
        recorded = 0
        for _ in range(60):  # the stream stays open and silent
            recorded = int(await r.hget(uploadstate.state_key(t.upload_id), "offset") or 0)
            if recorded == 3 * step:
                break
            await asyncio.sleep(0.1)
        assert recorded == 3 * step
        call.cancel()
    finally:
        await r.aclose()
        await ch.close()


def _restart_dead_upload_nodes(local: LocalCluster) -> None:
    """Start again (same ports and node id) the upload nodes a previous test killed."""
    dead = [c.name for c in local.children if c.name.startswith("upload") and c.proc.poll() is not None]
    for name in dead:
        local.restart(name)
    if dead:
        time.sleep(1)
        asyncio.run(local.wait_ready(60))


def test_pixelfox_put_cli_survives_a_killed_upload_node(two_nodes: LocalCluster, tmp_path: Path) -> None:
    """The real ``pixelfox put`` command; the node writing its upload is SIGKILLed mid-upload."""
    import json
    import subprocess
    import sys

    import redis

    _restart_dead_upload_nodes(two_nodes)
    path = tmp_path / "cli.png"
    sha = big_png(path, 2600)  # ~20 MB: a wide window to catch the upload mid-way
    size = path.stat().st_size
    r = redis.Redis.from_url(two_nodes.redis_url)
    proc = subprocess.Popen([sys.executable, "-m", "pixelfox", "put", "--json", "--wait", str(path)],
                            cwd=two_nodes.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = ""
    deadline = time.monotonic() + 120
    while not killed and proc.poll() is None and time.monotonic() < deadline:
        for k in r.scan_iter(match="pixelfox:{upload:*}:lock"):
            owner = (r.get(k) or b"").decode().split(":")[0]
            state = k.decode().removesuffix(":lock") + ":state"
            if owner and size * 0.1 < int(r.hget(state, "offset") or 0) < size * 0.9:
                two_nodes.child(owner).proc.kill()
                killed = owner
                break
        time.sleep(0.005)
    out, err = proc.communicate(timeout=300)
    r.close()
    if not killed:
        pytest.skip("the upload finished before it could be caught mid-way (machine too fast)")
    assert proc.returncode == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["status"] == "ready" and res["sha256"] == sha


async def test_a_rejected_upload_tells_its_reason_again_on_query_and_resume(cluster: ClusterHandle) -> None:
    """A stream refused as "not an image" marks the upload failed with that reason: a client whose
    stream broke at that moment (it sees a transport error, not the status) and asks again learns
    the reason (INVALID_ARGUMENT "not an image ..."), not just "ticket already used"."""
    data = b"this is a text file, not a photo\n" * 20_000  # 660 kB: more than the probe's first 256 KiB
    t = await create(cluster.manager_address, cluster.admin_api_key, len(data))
    ch, stub = upload_stub(t.upload_address)
    step = 256 * 1024
    try:
        # the node refuses after its probe's first 256 KiB, while the rest is still being written
        refused = await refused_stream(
            t.upload_address, [header(t, len(data)), *(chunk(o, data[o:o + step]) for o in range(0, len(data), step))])
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        reason = refused.details() or ""
        assert "not an image" in reason, reason
        with pytest.raises(grpc.aio.AioRpcError) as queried:
            await stub.QueryUpload(upload_pb2.QueryUploadRequest(ticket=t.ticket, upload_id=t.upload_id))
        assert queried.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason in (queried.value.details() or "") and "start a new one" in (queried.value.details() or "")
        resumed = await refused_stream(t.upload_address, [header(t, len(data)), chunk(0, data[:step])])
        assert resumed.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in (resumed.details() or "")
    finally:
        await ch.close()


async def test_a_malformed_sha256_in_the_header_is_refused_before_any_chunk(cluster: ClusterHandle,
                                                                            tmp_path: Path) -> None:
    """The header's sha256 follows ``POST /api/v1/uploads``' rule (64 hex digits in either case, or empty):
    a malformed one is INVALID_ARGUMENT at once, with the web API's words for the same value, not a
    checksum mismatch after the whole file went up; nothing is staged and the upload stays open at offset
    0, so the same ticket then goes through with the hash in upper case (the receipt's in lower case)."""
    big_png(tmp_path / "sha.png", 48)
    data = (tmp_path / "sha.png").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    t = await create(cluster.manager_address, cluster.admin_api_key, len(data))
    staged = cluster.local.state / "data" / "staging" / f"{t.upload_id}.part"
    states = uploadstate.UploadStates(aioredis.from_url(cluster.redis_url))
    api = f"{cluster.web_url}/api/v1/uploads"
    ch, stub = upload_stub(t.upload_address)
    try:
        for bad in ("not-a-sha256", sha[:63], sha + "0", sha[:-1] + "g", " " + sha[1:]):
            web = await asyncio.to_thread(requests.post, api, timeout=10, json={
                "filename": "x.png", "size": len(data), "sha256": bad},
                headers={"Authorization": f"Bearer {cluster.admin_api_key}"})
            assert web.status_code == 400, (bad, web.text)
            call = stub.Upload()
            await call.write(header(t, len(data), sha=bad))  # and no chunk, no half-close: the answer comes first
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await asyncio.wait_for(call, timeout=20)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert refused.value.details() == web.json()["error"]["message"] == (
                "sha256 must be 64 hexadecimal characters (the file's SHA-256), or left out"), bad
            assert not staged.exists(), bad
            st = await states.get(t.upload_id)
            assert st is not None and (st.status, st.offset) == ("open", 0), (bad, st)
            assert not await states.locked(t.upload_id), bad
        call = stub.Upload(timeout=60)
        await send(call, [header(t, len(data), sha.upper()), chunk(0, data)])
        receipt = await call
        assert (receipt.upload_id, receipt.sha256, receipt.size) == (t.upload_id, sha, len(data))
        assert receipt.image.sha256 == sha
    finally:
        await ch.close()
        await states.redis.aclose()


def test_a_stopped_writer_keeps_its_lock(two_nodes: LocalCluster, corpus: Path) -> None:
    """A writer whose process lives but is stopped (SIGSTOP: its alive mark in Redis expires, its port
    still accepts connections) is not taken for dead: the other upload node still answers ABORTED to
    QueryUpload and to a second stream, and the writer finishes the upload once it runs again."""
    _restart_dead_upload_nodes(two_nodes)
    asyncio.run(_stopped_writer(two_nodes, (corpus / "photos" / "painting_rgb.png").read_bytes()))


async def _stopped_writer(local: LocalCluster, data: bytes) -> None:
    key = await local.ensure_admin()
    nodes = [n for n in await local.wait_ready(60) if n.role == common_pb2.NODE_ROLE_UPLOAD]
    t = await create(local.manager_address, key, len(data))
    holder = next(n for n in nodes if n.grpc_address == t.upload_address)
    other = next(n for n in nodes if n.node_id != holder.node_id)
    ch, stub = upload_stub(t.upload_address)
    ch2, stub2 = upload_stub(other.grpc_address)
    r = aioredis.from_url(local.redis_url)
    step = 64 * 1024
    try:
        call = stub.Upload()
        await call.write(header(t, len(data), hashlib.sha256(data).hexdigest()))
        await call.write(chunk(0, data[:step]))
        for _ in range(100):  # until the node holds the upload's lock
            if await r.exists(uploadstate.lock_key(t.upload_id)):
                break
            await asyncio.sleep(0.05)
        pid = local.child(holder.node_id).proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(liveness.ALIVE_MS / 1000 + 1.0)
            assert not await r.exists(uploadstate.node_alive_key(holder.node_id))  # it looks dead to Redis
            with pytest.raises(grpc.aio.AioRpcError) as querying:
                await stub2.QueryUpload(upload_pb2.QueryUploadRequest(ticket=t.ticket, upload_id=t.upload_id),
                                        timeout=10)
            assert querying.value.code() == grpc.StatusCode.ABORTED
            busy = await refused_stream(other.grpc_address, [header(t, len(data))])
            assert busy.code() == grpc.StatusCode.ABORTED  # type: ignore[attr-defined]
        finally:
            os.kill(pid, signal.SIGCONT)
        for off in range(step, len(data), step):
            await call.write(chunk(off, data[off:off + step]))
        await call.done_writing()
        receipt = await call
        assert receipt.image.sha256 == hashlib.sha256(data).hexdigest()
    finally:
        await ch.close()
        await ch2.close()
        await r.aclose()
