"""What is left of a storage node after ``pixelfox nodes forget`` (docs/operations.md "The registry and maintenance").

Three storage nodes, two replicas. storage3 holds a copy of an image that is then deleted while storage3 is
stopped (its replica delete stays pending), a copy of an image that stays, and the only copy of a third.
Once it is forgotten, its pending deletes are given up (the gauge reads 0), no ``object_locations`` row names
it, the image that stays is back at two copies on the other nodes, and the one whose only copy was there is
an open replica debt that names the node, not a row that vanished.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator

import grpc
import pytest

from nodes.manager.repair import NO_COPY_LEFT
from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.e2e.test_decommission import figure, keys_of
from tests.e2e.test_replication import PHOTOS, last_errors, pool_files, put, wait_for
from tests.ops.conftest import FAST_REPAIR_ENV, cli, start_cluster, status

pytestmark = pytest.mark.e2e

PENDING = 'pixelfox_objects_pending_deletes{state="pending"}'


@pytest.fixture(scope="module")
def three_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = start_cluster(
        tmp_path_factory.mktemp("forget"), Counts(upload=1, proc=1, storage=3, web=0),
        {**FAST_REPAIR_ENV, "PIXELFOX_GC_INTERVAL_S": "0.5"})
    try:
        yield local
    finally:
        local.stop()


def maintenance(local: LocalCluster, on: bool, *nodes: str) -> None:
    for node in nodes:
        res = cli(local.root, "nodes", "maintenance", node, *(() if on else ("--off",)))
        assert res.returncode == 0, res.stdout + res.stderr


def rows_on(local: LocalCluster, node: str) -> int:
    with sqlite3.connect(local.state / "pixelfox.db") as db:
        return int(db.execute("SELECT count(*) FROM object_locations WHERE node_id = ?", (node,)).fetchone()[0])


def debts_of(local: LocalCluster) -> dict[str, tuple[int, int]]:
    with sqlite3.connect(local.state / "pixelfox.db") as db:
        return {k: (h, w) for k, h, w in db.execute("SELECT key, have, want FROM replica_debts")}


def delete_image(local: LocalCluster, slug: str) -> None:
    async def go() -> None:
        key = await local.ensure_admin()
        async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
            await manager_pb2_grpc.ManagerServiceStub(ch).DeleteImage(
                manager_pb2.DeleteImageRequest(slug=slug), metadata=api_key_metadata(key), timeout=60)
    asyncio.run(go())


def test_forgotten_node_leaves_no_pending_deletes_nor_locations(three_storage: LocalCluster) -> None:
    local = three_storage
    maintenance(local, True, "storage1")  # new objects go to storage2 and storage3
    doomed, kept = put(local, PHOTOS / "painting_rgb.png"), put(local, PHOTOS / "blackbug_alpha.png")
    maintenance(local, True, "storage2")  # and now to storage3 alone
    only = put(local, PHOTOS / "rotating_squares_30f.gif")
    held = pool_files(local, "storage3")
    assert keys_of(doomed) | keys_of(kept) | keys_of(only) <= set(held)
    assert not keys_of(only) & set(pool_files(local, "storage2"))
    local.terminate("storage3")
    wait_for(lambda: status(local.root)["storage3"]["status"] == "stopped", 15, "storage3 stopped")
    maintenance(local, False, "storage1", "storage2")

    delete_image(local, doomed["id"])  # storage3's copies cannot go: they wait as pending deletes
    wait_for(lambda: figure(local, PENDING) == len(keys_of(doomed)), 30, "storage3's deletes pending")
    assert not keys_of(doomed) & set(pool_files(local, "storage2"))

    res = cli(local.root, "nodes", "forget", "storage3")
    assert res.returncode == 0 and "storage3: forgotten" in res.stdout, res.stdout + res.stderr
    wait_for(lambda: figure(local, PENDING) == 0, 30, "storage3's pending deletes given up")
    assert figure(local, "pixelfox_objects_deletes_given_up_total") == len(keys_of(doomed))
    assert rows_on(local, "storage3") == 0
    # the image that stays: two copies again, on the nodes that are left
    wait_for(lambda: all(keys_of(kept) <= set(pool_files(local, n)) for n in ("storage1", "storage2")), 60,
             "the repair to copy the kept image to storage1")
    # the image whose only copy was on storage3: an open debt per key that says so, still counted
    lost = keys_of(only)
    wait_for(lambda: figure(local, "pixelfox_storage_under_replicated_objects") == len(lost), 30,
             "the lost keys counted as under-replicated")
    # the kept image's debts close after its copies land: wait for them to go rather than read once
    wait_for(lambda: debts_of(local) == {k: (0, 2) for k in lost}, 30, "only the lost keys left as debts")
    # the forget's own words; a repair pass that read storage3 as a holder just before it was forgotten
    # may overwrite a debt, which the next pass sets back to 0 copies with the repair's words (NO_COPY_LEFT)
    assert last_errors(local) <= {
        "no copy left: the only one was on storage node storage3, which was forgotten; its owner's upload of the "
        "same file restores it", NO_COPY_LEFT}, last_errors(local)
    assert figure(local, PENDING) == 0 and rows_on(local, "storage3") == 0
