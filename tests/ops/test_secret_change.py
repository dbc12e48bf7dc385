"""Changing ``PIXELFOX_CLUSTER__SECRET``, as docs/operations.md "Changing the cluster secret" says.

No node accepts two cluster secrets, so every node stops and the cluster starts again on the new one
(a ``pixelfox up`` folder: ``.pixelfox/secret``). What the old secret signed is then refused: an
unfinished upload's ticket (its owner's ``RenewUpload`` gives a new one and the upload completes), a
signed URL of an original (until the storage nodes list the old secret in ``PIXELFOX_URL_SIGNING__KEYS``)
and a deletion link.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from pixelfox import deletion
from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.v1 import manager_pb2, manager_pb2_grpc, upload_pb2, upload_pb2_grpc
from tests.e2e.test_replication import PHOTOS, fetch, get_image, put, storage_urls
from tests.e2e.uploadkit import chunk, create, header, refused_stream, wait_ready
from tests.ops.conftest import admin_key, healthy, start_cluster, status, wait_for

pytestmark = pytest.mark.e2e

COUNTS = Counts(upload=1, proc=1, storage=1, web=1)
ENV = {"PIXELFOX_NODE_TIMEOUT_S": "2", "PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5"}


def answer(url: str) -> int:
    """The HTTP status ``url`` answers with."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def renew(local: LocalCluster, upload_id: str) -> manager_pb2.CreateUploadResponse:
    async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
        return await manager_pb2_grpc.ManagerServiceStub(ch).RenewUpload(
            manager_pb2.RenewUploadRequest(upload_id=upload_id), metadata=api_key_metadata(admin_key(local)),
            timeout=10)


def upload(address: str, msgs: list[upload_pb2.UploadRequest]) -> upload_pb2.UploadReceipt:
    with grpc.insecure_channel(address) as ch:
        return upload_pb2_grpc.UploadServiceStub(ch).Upload(iter(msgs), timeout=60)


def test_a_new_cluster_secret_voids_what_the_old_one_signed(tmp_path: Path) -> None:
    data = (PHOTOS / "htc_desire_gps_icc.webp").read_bytes()
    local = start_cluster(tmp_path, COUNTS, ENV)
    try:
        old = local.secret
        img = put(local, PHOTOS / "blackbug_alpha.png")
        signed = img["stored_original_url"]
        assert "sig=" in signed and fetch(signed)
        owner = asyncio.run(get_image(local, img["id"])).owner_id
        link = f"{local.web_urls[0]}/api/v1/delete/{img['id']}/{owner}/{deletion.token(old, img['id'], owner)}"
        assert answer(link) == 200  # the confirmation page
        ticket = asyncio.run(create(local.manager_address.split(",")[0], admin_key(local), len(data)))
    finally:
        local.stop()

    (local.state / "secret").write_text(secrets.token_urlsafe(32))
    local = start_cluster(tmp_path, COUNTS, ENV)
    try:
        assert local.secret != old
        # a second cluster in this process gets other ports (`pixelfox up` keeps them): the same links there
        signed = asyncio.run(storage_urls(local))["storage1"] + "/o/" + signed.split("/o/", 1)[1]
        link = local.web_urls[0] + "/api/v1/delete/" + link.split("/api/v1/delete/", 1)[1]
        address = status(local.root)["upload1"]["address"]
        err = asyncio.run(refused_stream(address, [header(ticket, len(data)), chunk(0, data)]))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
        assert "upload ticket signature is not valid" in (err.details() or ""), err.details()
        fresh = asyncio.run(renew(local, ticket.upload_id))
        assert fresh.upload_id == ticket.upload_id and fresh.ticket != ticket.ticket
        receipt = upload(fresh.upload_address, [header(fresh, len(data)), chunk(0, data)])
        done = asyncio.run(wait_ready(local.manager_address.split(",")[0], admin_key(local), receipt.image.slug))
        assert done.bytes == len(data)

        assert answer(signed) == 403
        assert answer(link) == 403

        # storage nodes that still accept the old secret's signatures serve the URLs made before
        local.restart("storage1", sig=signal.SIGTERM, env={"PIXELFOX_URL_SIGNING__KEYS": json.dumps([old])})
        wait_for(lambda: healthy(local, "storage1"), 30)
        assert answer(signed) == 200
    finally:
        local.stop()
