"""An owner renews an open upload's ticket (``RenewUpload``, ``POST /api/v1/uploads/<id>/ticket``), so a
resume is not limited to the first ticket's 15 minutes: who may, what is refused, ``upload_file`` renewing a
ticket that ended mid-run (re-signed short, no wait), and, on a cluster whose tickets last 5 s and whose
clock-skew leeway is cut to 3 s (``PIXELFOX_LIMITS__TICKET_LEEWAY_S``, 30 s by default), ``pixelfox put``
resuming an upload whose ticket ended (the tests that wait out a ticket and its leeway).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import redis
import requests

from pixelfox import tickets
from pixelfox.client.journal import Entry, Journal, epoch
from pixelfox.client.uploader import Resume, upload_file
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.uploadstate import open_uploads_key, state_key
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.conftest import ClusterHandle, wait_http
from tests.e2e.test_put_resume import RATE, interrupt, node_named, progress, run_again, start_put
from tests.e2e.uploadkit import Proxy, big_png, create, new_user_key, own_cluster

pytestmark = pytest.mark.e2e


async def renew(manager: str, upload_id: str, api_key: str = "") -> manager_pb2.CreateUploadResponse:
    async with grpc.aio.insecure_channel(manager) as ch:
        return await manager_pb2_grpc.ManagerServiceStub(ch).RenewUpload(
            manager_pb2.RenewUploadRequest(upload_id=upload_id), metadata=api_key_metadata(api_key), timeout=10)


async def refused(manager: str, upload_id: str, api_key: str = "") -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await renew(manager, upload_id, api_key)
    return e.value


async def test_only_the_owner_renews_an_open_upload(cluster: ClusterHandle) -> None:
    manager = cluster.manager_address.split(",")[0]
    owner = await new_user_key(cluster.local, "renewer")
    other = await new_user_key(cluster.local, "renewer_other")
    first = await create(manager, owner, 1000)
    await asyncio.sleep(1.1)  # the new ticket's exp is a later second

    again = await renew(manager, first.upload_id, owner)
    key = tickets.derive_key(cluster.secret)
    old, new = tickets.verify(key, first.ticket), tickets.verify(key, again.ticket)
    assert (new.upload_id, new.user_id, new.size, new.content_type) == (old.upload_id, old.user_id, 1000, "image/png")
    assert new.expires_at > old.expires_at and again.ticket != first.ticket
    assert epoch(again.expires_at) == tickets.usable_until(new.expires_at)
    assert (again.upload_id, again.chunk_size, again.max_size) == (first.upload_id, first.chunk_size, 1000)
    assert again.upload_address and again.upload_url.endswith(f"/tus/{first.upload_id}")
    assert again.state_ttl_s == 3600 and first.state_ttl_s == 3600

    theirs = await refused(manager, first.upload_id, other)
    assert (theirs.code(), theirs.details()) == (grpc.StatusCode.NOT_FOUND, "no such upload")
    nobody = await refused(manager, first.upload_id)
    assert nobody.code() == grpc.StatusCode.UNAUTHENTICATED and "owner's API key" in (nobody.details() or "")
    assert (await refused(manager, "01" + "Z" * 24, owner)).code() == grpc.StatusCode.NOT_FOUND

    anonymous = await create(manager, "", 1000)  # no owner: nobody's credential may renew it
    for api_key in (owner, cluster.admin_api_key):
        anon = await refused(manager, anonymous.upload_id, api_key)
        assert anon.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "anonymous upload's ticket cannot be renewed" in (anon.details() or "")

    async with grpc.aio.insecure_channel(manager) as ch:  # the owner cancels: nothing brings it back
        await manager_pb2_grpc.ManagerServiceStub(ch).AbandonUpload(
            manager_pb2.AbandonUploadRequest(upload_id=first.upload_id), metadata=api_key_metadata(owner),
            timeout=10)
    cancelled = await refused(manager, first.upload_id, owner)
    assert cancelled.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "the upload is abandoned (the upload was cancelled by its owner" in (cancelled.details() or "")
    admin = await refused(manager, first.upload_id, cluster.admin_api_key)
    assert admin.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert progress(cluster, first.upload_id).status == "abandoned"


def test_web_renews_a_ticket_for_its_owner(cluster: ClusterHandle) -> None:
    base = cluster.web_url
    owner = asyncio.run(new_user_key(cluster.local, "web_renewer"))
    other = asyncio.run(new_user_key(cluster.local, "web_renewer_other"))
    auth = {"Authorization": f"Bearer {owner}"}
    made = requests.post(f"{base}/api/v1/uploads", json={"size": 1000, "filename": "a.png"}, headers=auth, timeout=10)
    assert made.status_code == 201, made.text
    upload_id = made.json()["id"]
    url = f"{base}/api/v1/uploads/{upload_id}/ticket"

    renewed = requests.post(url, headers=auth, timeout=10)
    assert renewed.status_code == 200, renewed.text
    body = renewed.json()
    assert set(body) == set(made.json())
    assert (body["id"], body["status"], body["deduplicated"], body["max_size"]) == (upload_id, "open", False, 1000)
    assert body["upload_url"].endswith(f"/tus/{upload_id}") and body["chunk_size"] == made.json()["chunk_size"]
    assert tickets.verify(tickets.derive_key(cluster.secret), body["ticket"]).upload_id == upload_id
    assert epoch(body["expires_at"]) >= epoch(made.json()["expires_at"])

    # the upload page's move off an upload node that stopped answering: another healthy one, same upload
    moved = requests.post(url, json={"exclude_address": body["upload_address"]}, headers=auth, timeout=10)
    assert moved.status_code == 200, moved.text
    assert moved.json()["id"] == upload_id and moved.json()["upload_address"] != body["upload_address"], moved.text
    assert moved.json()["upload_url"].endswith(f"/tus/{upload_id}") and moved.json()["upload_url"] != body["upload_url"]
    assert tickets.verify(tickets.derive_key(cluster.secret), moved.json()["ticket"]).upload_id == upload_id
    stays = requests.post(url, json={}, headers=auth, timeout=10)  # no node named: it stays where it is now
    assert stays.json()["upload_address"] == moved.json()["upload_address"], stays.text
    unset = requests.post(url, json={"exclude_address": None}, headers=auth, timeout=10)  # null: as absent
    assert unset.status_code == 200 and unset.json()["upload_address"] == moved.json()["upload_address"], unset.text
    bad = requests.post(url, json={"exclude_address": 5}, headers=auth, timeout=10)
    assert bad.status_code == 400 and "exclude_address" in bad.json()["error"]["message"], bad.text

    nobody = requests.post(url, timeout=10)
    assert nobody.status_code == 401, nobody.text
    theirs = requests.post(url, headers={"Authorization": f"Bearer {other}"}, timeout=10)
    assert theirs.status_code == 404, theirs.text
    assert requests.delete(f"{base}/api/v1/uploads/{upload_id}", headers=auth, timeout=10).status_code == 204
    gone = requests.post(url, headers=auth, timeout=10)
    assert gone.status_code == 409 and "cannot be renewed" in gone.json()["error"]["message"], gone.text
    spec = requests.get(f"{base}/api/v1/openapi.json", timeout=10)
    assert spec.status_code == 200  # documented with the other upload routes
    assert "post" in spec.json()["paths"]["/api/v1/uploads/{id}/ticket"]


async def ending_soon(cluster: ClusterHandle, tmp_path: Path, user: str
                     ) -> tuple[tuple[tuple[str, str], ...], Path, str, manager_pb2.CreateUploadResponse, int, Resume]:
    """A new user's upload of a ~4.3 MB file (~8.6 s at 500 kB/s) whose journal entry holds a ticket re-signed
    with the cluster's key to be usable 3 s more (as test_upload_limits does): the user's metadata, the file,
    its SHA-256, CreateUpload's answer, the unix second the short ticket ends, and the journal."""
    manager = cluster.manager_address.split(",")[0]
    key = await new_user_key(cluster.local, user)
    md = api_key_metadata(key)
    path = tmp_path / "mid.png"
    sha = big_png(path, 1200)
    made = await create(manager, key, path.stat().st_size)
    ticket_key = tickets.derive_key(cluster.secret)
    claims = tickets.verify(ticket_key, made.ticket)
    short = tickets.sign(ticket_key, claims.upload_id, claims.user_id, claims.size, claims.content_type, 3,
                         now=int(time.time()) - tickets.LEEWAY_S)
    usable = tickets.usable_until(tickets.verify(ticket_key, short, allow_expired=True).expires_at)
    resume = Resume(Journal(tmp_path / "uploads.json"), manager)
    resume.journal.put(resume.key(path, md), Entry(made.upload_id, made.upload_address, short,
                                                   datetime.fromtimestamp(usable, UTC).isoformat(), made.chunk_size,
                                                   sha256=sha, state_ttl_s=3600))
    return md, path, sha, made, usable, resume


async def test_a_ticket_that_ends_mid_run_is_renewed_after_a_break(cluster: ClusterHandle, tmp_path: Path) -> None:
    """``upload_file`` resumes a journal entry whose ticket ends while the file is on the way
    (:func:`ending_soon`); the connection drops after that (a proxy cuts it), the upload node refuses the
    ended ticket, and the uploader renews it and sends the rest to the same upload."""
    manager = cluster.manager_address.split(",")[0]
    md, path, sha, made, usable, resume = await ending_soon(cluster, tmp_path, "midrun")
    size, journal = path.stat().st_size, resume.journal
    proxy = Proxy()
    via = await proxy.start()

    def dial(address: str) -> str:
        proxy.target = address
        return via

    try:
        async with grpc.aio.insecure_channel(manager) as ch:
            stub = manager_pb2_grpc.ManagerServiceStub(ch)
            sending = asyncio.ensure_future(upload_file(stub, md, path, resume=resume, dial=dial, max_rate=500_000))
            await asyncio.sleep(usable - time.time() + 1)  # the ticket is dead now, the stream still going
            assert not sending.done() and proxy.bytes_up < size
            proxy.cut()
            receipt = await sending
    finally:
        await proxy.close()
    assert (receipt.upload_id, receipt.sha256, receipt.size) == (made.upload_id, sha, size)
    assert journal.entries() == {}


@pytest.fixture(scope="module")
def short_tickets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """Tickets valid 5 s (accepted 8 s with the leeway cut to 3 s); states kept the default hour; 3 open
    uploads a user."""
    root = tmp_path_factory.mktemp("renew")
    with own_cluster(root, upload=1, web=1, PIXELFOX_LIMITS__TICKET_TTL_S="5", PIXELFOX_LIMITS__TICKET_LEEWAY_S="3",
                     PIXELFOX_LIMITS__USER_OPEN_UPLOADS="3") as local:
        wait_http(f"{local.web_urls[0]}/healthz")
        state = json.loads((root / ".pixelfox" / "cluster.json").read_text())
        yield ClusterHandle(local, root, local.web_urls[0], local.manager_address, state["secret"],
                            local.redis_url, state["admin_api_key"])


def test_put_resumes_after_its_ticket_ended(short_tickets: ClusterHandle, tmp_path: Path) -> None:
    """The first run is interrupted; the ticket ends (5 s plus the 3 s leeway) and the upload node would
    refuse it; the second run renews it (RenewUpload) and sends only the rest. A user's upload whose
    ticket ended meanwhile stopped counting as open: renewed, it counts again until its new end."""
    cluster = short_tickets
    manager = cluster.manager_address.split(",")[0]
    path = tmp_path / "late.png"
    sha = big_png(path, 3600)  # ~39 MB
    size = path.stat().st_size
    state = tmp_path / "state"
    journal = Journal(state / "pixelfox" / "uploads.json")
    upload_id, err = interrupt(cluster, start_put(cluster, state, "--limit-rate", RATE, str(path)), journal,
                               size // 4)
    user = asyncio.run(new_user_key(cluster.local, "late_user"))
    theirs = asyncio.run(create(manager, user, 1000))
    entry = next(iter(journal.entries().values()))
    assert entry.upload_id == upload_id and entry.state_ttl_s == 3600
    assert entry.alive_until() == epoch(entry.expires_at) + 3600  # kept past the ticket's end

    time.sleep(max(0.0, epoch(theirs.expires_at) - time.time()) + 1.5)  # both tickets are dead now (theirs last)
    assert not next(iter(journal.entries().values())).expired()  # the journal keeps it: renewable
    left = progress(cluster, upload_id)
    assert left.status == "paused" and size // 4 <= left.offset < size  # its owner renews it and goes on
    assert user_progress(manager, theirs.upload_id, user).status == "paused"

    res, err, sent = run_again(cluster, state, path)
    assert (res["status"], res["sha256"]) == ("ready", sha)
    assert f"resuming {path} (upload {upload_id}): " in err
    assert 0 < sent <= size - left.offset  # only the rest went, through a renewed ticket
    assert progress(cluster, upload_id).image.slug == res["id"]
    assert journal.entries() == {}

    # the user's lapsed upload no longer holds a slot: three new ones fill them, and its renewal is refused
    # (it would be a fourth open upload) until one of them is cancelled
    fills = [asyncio.run(create(manager, user, 1000)) for _ in range(3)]
    full = asyncio.run(refused(manager, theirs.upload_id, user))
    assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "3 unfinished uploads already" in (full.details()
                                                                                                  or "")
    with grpc.insecure_channel(manager) as ch:
        manager_pb2_grpc.ManagerServiceStub(ch).AbandonUpload(
            manager_pb2.AbandonUploadRequest(upload_id=fills[0].upload_id), metadata=api_key_metadata(user), timeout=10)
    again = asyncio.run(renew(manager, theirs.upload_id, user))
    r = redis.Redis.from_url(cluster.redis_url)
    user_id = tickets.verify(tickets.derive_key(cluster.secret), again.ticket).user_id
    score = r.zscore(open_uploads_key(user_id), theirs.upload_id)  # counted again, until the new ticket's end
    assert score is not None and abs(score - epoch(again.expires_at)) <= 1, score
    r.close()
    p = user_progress(manager, theirs.upload_id, user)
    assert (p.status, p.offset) == ("open", 0)


def user_progress(manager: str, upload_id: str, api_key: str) -> manager_pb2.UploadProgress:
    with grpc.insecure_channel(manager) as ch:
        return manager_pb2_grpc.ManagerServiceStub(ch).GetUpload(
            manager_pb2.GetUploadRequest(upload_id=upload_id), metadata=api_key_metadata(api_key), timeout=10)


def test_an_upload_whose_ticket_ended_is_paused_and_listed_until_its_state_goes(
        short_tickets: ClusterHandle, tmp_path: Path) -> None:
    """A user's upload whose ticket ended while its state lives is ``paused``, not ``expired``: GetUpload,
    ListUploads, ``pixelfox uploads`` and ``GET /api/v1/uploads`` say so, with ``expires_at`` the state's end
    and ``ticket_expires_at`` the ticket's; a renewal makes it ``open`` again. An anonymous upload's ended
    ticket has nobody to renew it: ``expired``. Once the state goes (its TTL, cut short here) the user's
    upload is ``expired`` too and no longer listed."""
    cluster = short_tickets
    manager = cluster.manager_address.split(",")[0]
    key = asyncio.run(new_user_key(cluster.local, "paused_user"))
    path = tmp_path / "part.png"
    big_png(path, 600)  # ~1 MB: 300 KB of it are sent
    data = path.read_bytes()
    mine = asyncio.run(create(manager, key, len(data)))
    sent = requests.patch(mine.upload_url, data=data[:300_000], timeout=30, headers={
        "Authorization": f"Bearer {mine.ticket}", "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream"})
    assert sent.status_code == 204, sent.text
    anonymous = asyncio.run(create(manager, "", 1000))
    time.sleep(max(0.0, epoch(anonymous.expires_at) - time.time()) + 1.5)  # both tickets are dead now

    p = user_progress(manager, mine.upload_id, key)
    state_end = time.time() + redis.Redis.from_url(cluster.redis_url).ttl(state_key(mine.upload_id))
    assert (p.status, p.offset, p.size) == ("paused", 300_000, len(data))
    assert p.ticket_expires_at == mine.expires_at  # the ticket's last accepted second, as CreateUpload said
    assert abs(epoch(p.expires_at) - state_end) <= 2 and epoch(p.expires_at) > time.time() + 3000
    assert user_progress(manager, anonymous.upload_id, "").status == "expired"
    with grpc.insecure_channel(manager) as ch:
        listed = manager_pb2_grpc.ManagerServiceStub(ch).ListUploads(
            manager_pb2.ListUploadsRequest(), metadata=api_key_metadata(key), timeout=10).uploads
    assert [(u.upload_id, u.status) for u in listed] == [(mine.upload_id, "paused")]
    cli = cluster.pixelfox("uploads", "--json", "--api-key", key)
    assert cli.returncode == 0, cli.stderr
    (row,) = json.loads(cli.stdout)["uploads"]
    assert (row["id"], row["status"], row["offset"]) == (mine.upload_id, "paused", 300_000)
    assert (row["expires_at"], row["ticket_expires_at"]) == (p.expires_at, p.ticket_expires_at)
    table = cluster.pixelfox("uploads", "--api-key", key)
    assert table.returncode == 0 and "paused" in table.stdout and "ticket is renewed" in table.stdout, table.stdout
    web = requests.get(f"{cluster.web_url}/api/v1/uploads", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert web.status_code == 200 and [(u["id"], u["status"]) for u in web.json()["uploads"]] == [
        (mine.upload_id, "paused")], web.text
    assert web.json()["uploads"][0] == {**row, "image": None}

    again = asyncio.run(renew(manager, mine.upload_id, key))  # the owner renews it: open, on its new ticket
    p = user_progress(manager, mine.upload_id, key)
    assert (p.status, p.offset, p.ticket_expires_at) == ("open", 300_000, again.expires_at)

    r = redis.Redis.from_url(cluster.redis_url)
    r.pexpire(state_key(mine.upload_id), 1)  # its state's TTL runs out
    time.sleep(0.1)
    r.close()
    gone = user_progress(manager, mine.upload_id, key)
    assert (gone.status, gone.expires_at, gone.ticket_expires_at) == ("expired", "", "")
    web = requests.get(f"{cluster.web_url}/api/v1/uploads", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert web.status_code == 200 and web.json()["uploads"] == [], web.text


async def test_a_ticket_that_ended_is_renewed_when_its_node_is_gone(cluster: ClusterHandle, tmp_path: Path) -> None:
    """As above (:func:`ending_soon`), but after the ticket's end the upload node writing the file is SIGKILLed:
    RelocateUpload refuses the ended ticket, so the uploader renews it (RenewUpload answers a node that lives)
    and sends the rest to the same upload. It used to give up ("upload ticket expired") and drop the journal
    entry, so the next run started the file over. The node is started again afterwards (same ports)."""
    manager = cluster.manager_address.split(",")[0]
    md, path, sha, made, usable, resume = await ending_soon(cluster, tmp_path, "midrun_gone")
    gone = cluster.local.child(node_named(cluster, made.upload_address))
    try:
        async with grpc.aio.insecure_channel(manager) as ch:
            stub = manager_pb2_grpc.ManagerServiceStub(ch)
            sending = asyncio.ensure_future(upload_file(stub, md, path, resume=resume, max_rate=500_000))
            await asyncio.sleep(usable - time.time() + 1)  # the ticket is dead now, the stream still going
            assert not sending.done()
            gone.proc.kill()  # its port refuses connections from now on
            receipt = await sending
    finally:
        cluster.local.restart(gone.name)
        await cluster.local.wait_ready(60)
    assert (receipt.upload_id, receipt.sha256, receipt.size) == (made.upload_id, sha, path.stat().st_size)
    assert resume.journal.entries() == {}
