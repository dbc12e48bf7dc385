"""``pixelfox scrub``: copies removed from a storage node's folder by hand are found, and ``--fix`` has them repaired
(docs/operations.md "Copies removed by hand").

Two storage nodes, two replicas. Two images are uploaded (each file on both nodes); then, by hand, one image's
original is removed from storage1's folder, and every file of the other image from both folders. Before the scrub
nothing noticed: the rows still said both nodes hold both images.

* ``pixelfox scrub`` lists exactly those copies per node, with their image, exits 1 and changes nothing.
* ``pixelfox scrub --fix`` forgets them with a replica debt each: the repair copies the first image's original
  back to storage1 from storage2, and the second image, with no copy left, says ``status: "lost"``.
* A scrub after that finds nothing missing and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests

from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.v1 import manager_pb2, manager_pb2_grpc
from tests.e2e.test_decommission import keys_of
from tests.e2e.test_forget_storage import debts_of, rows_on
from tests.e2e.test_lost_page import api_image
from tests.e2e.test_replication import PHOTOS, last_errors, pool_files, put, wait_for
from tests.ops.conftest import FAST_REPAIR_ENV, cli, start_cluster

pytestmark = pytest.mark.e2e

NODES = ("storage1", "storage2")


@pytest.fixture(scope="module")
def two_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = start_cluster(tmp_path_factory.mktemp("scrub"), Counts(upload=1, proc=1, storage=2, web=1),
                          FAST_REPAIR_ENV)
    try:
        yield local
    finally:
        local.stop()


def scrub(local: LocalCluster, *args: str) -> tuple[int, dict[str, Any]]:
    """``pixelfox scrub --json ARGS``: its exit status and its JSON."""
    res = cli(local.root, "scrub", "--json", *args)
    assert res.stdout, res.stderr
    return res.returncode, json.loads(res.stdout)


def locations(local: LocalCluster) -> set[tuple[str, str]]:
    with sqlite3.connect(local.state / "pixelfox.db") as db:
        return {(k, n) for k, n in db.execute("SELECT key, node_id FROM object_locations")}


def original_key(img: dict[str, Any]) -> str:
    return str(img["stored_original_url"]).split("/o/", 1)[1].split("?", 1)[0]


def test_scrub_finds_copies_removed_by_hand_and_fix_has_them_repaired(two_storage: LocalCluster) -> None:
    local = two_storage
    one, two = put(local, PHOTOS / "painting_rgb.png"), put(local, PHOTOS / "blackbug_alpha.png")
    wait_for(lambda: all(keys_of(one) | keys_of(two) <= set(pool_files(local, n)) for n in NODES), 30,
             "both images' files on both storage nodes")
    code, clean = scrub(local)
    assert code == 0 and clean["missing_total"] == 0 and clean["missing"] == [], clean

    # by hand: one image's original off storage1, every file of the other off both nodes
    first = original_key(one)
    held = pool_files(local, "storage2")[first]
    (local.state / "data" / "storage1" / first).unlink()
    for node in NODES:
        for key in keys_of(two):
            (local.state / "data" / node / key).unlink()
    gone = {(first, "storage1")} | {(k, n) for k in keys_of(two) for n in NODES}
    rows, debts = locations(local), debts_of(local)
    assert gone <= rows and not debts

    code, found = scrub(local)
    assert code == 1, found
    by_node = {n["node"]: n for n in found["nodes"]}
    assert by_node == {
        "storage1": {"node": "storage1", "checked": rows_on(local, "storage1"), "missing": 1 + len(keys_of(two)),
                     "unreachable": 0, "error": ""},
        "storage2": {"node": "storage2", "checked": rows_on(local, "storage2"), "missing": len(keys_of(two)),
                     "unreachable": 0, "error": ""}}
    assert found["missing_total"] == len(gone) and found["fixed"] == 0
    assert {(m["key"], m["node"]) for m in found["missing"]} == gone
    assert {m["key"]: m["image"] for m in found["missing"]} == {first: one["id"], **{k: two["id"]
                                                                                   for k in keys_of(two)}}
    assert not any(m["fixed"] for m in found["missing"])
    assert locations(local) == rows and debts_of(local) == {}  # a report only: nothing changed

    text = cli(local.root, "scrub", "--node", "storage1")  # the table, one node
    assert text.returncode == 1, text.stdout + text.stderr
    assert "storage2" not in text.stdout and first in text.stdout and one["id"] in text.stdout
    assert f"{len(keys_of(two)) + 1} copies are missing: run `pixelfox scrub --fix`" in " ".join(text.stdout.split())
    wrong = cli(local.root, "scrub", "--node", "storage9")
    assert wrong.returncode == 2, wrong.stderr
    # storage1 and storage2 are as close to storage9: either may be named
    assert re.search(r"no storage node storage9 is registered \(see `pixelfox status` for their ids\); did you "
                     r"mean 'storage[12]'\?", wrong.stderr), wrong.stderr
    role = cli(local.root, "scrub", "--node", "upload1")  # it said "no storage node upload1 is registered"
    assert role.returncode == 2 and "node upload1 is not a storage node" in role.stderr, role.stderr
    case = cli(local.root, "scrub", "--node", "Storage2")
    assert case.returncode == 2, case.stderr
    assert "did you mean 'storage2'? (node ids are case-sensitive)" in case.stderr, case.stderr

    async def anonymous() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
            try:
                await manager_pb2_grpc.ManagerServiceStub(ch).Scrub(manager_pb2.ScrubRequest(fix=True), timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK
    assert asyncio.run(anonymous()) == grpc.StatusCode.PERMISSION_DENIED
    assert locations(local) == rows

    code, fixed = scrub(local, "--fix")
    assert code == 1 and fixed["fixed"] == len(gone) and all(m["fixed"] for m in fixed["missing"]), fixed
    assert {(m["key"], m["node"]) for m in fixed["missing"]} == gone
    # the first image: copied back to storage1 from storage2 by the repair
    wait_for(lambda: pool_files(local, "storage1").get(first) == held, 30, "the original back on storage1")
    wait_for(lambda: (first, "storage1") in locations(local), 30, "its location recorded again")
    # the second: no copy left, so lost, with a debt per key saying why
    wait_for(lambda: api_image(local, two["id"])["status"] == "lost", 30, "the second image shown as lost")
    assert api_image(local, one["id"])["status"] == "ready"
    assert not {(k, n) for k, n in locations(local) if k in keys_of(two)}
    wait_for(lambda: set(debts_of(local)) == keys_of(two), 30, "only the lost keys in debt")
    assert debts_of(local) == {k: (0, 2) for k in keys_of(two)}
    assert last_errors(local) == {"the copies on storage nodes storage1 and storage2 were missing when scrubbed"}

    code, after = scrub(local)
    assert code == 0 and after["missing_total"] == 0, after
    assert {n["node"]: n["missing"] for n in after["nodes"]} == {"storage1": 0, "storage2": 0}


def test_an_image_whose_original_alone_was_lost_gets_it_back_from_its_owners_upload(two_storage: LocalCluster
                                                                                     ) -> None:
    """Every copy of an image's original removed by hand, its variants kept: after ``scrub --fix`` no node
    holds the original, and the owner's upload of the same file was answered with the image unchanged
    (``ready``, no original, nothing stored: the restore asked for every file to be lost). It now gives the
    image its original back, under the same id."""
    local = two_storage
    img = put(local, PHOTOS / "leica_t_16mp_orient8_gps.jpg")
    key = original_key(img)
    wait_for(lambda: all(key in pool_files(local, n) for n in NODES), 30, "the original on both nodes")
    for node in NODES:
        (local.state / "data" / node / key).unlink()
    code, fixed = scrub(local, "--fix")
    assert code == 1 and {(m["key"], m["node"]) for m in fixed["missing"]} == {(key, n) for n in NODES}, fixed
    assert not {n for k, n in locations(local) if k == key}  # --fix forgot both copies at once

    again = put(local, PHOTOS / "leica_t_16mp_orient8_gps.jpg")
    assert (again["id"], again["deduplicated"], again["status"]) == (img["id"], True, "ready"), again
    assert again["stored_original_url"], again
    got = requests.get(again["stored_original_url"], timeout=30)
    assert got.status_code == 200 and len(got.content) == (PHOTOS / "leica_t_16mp_orient8_gps.jpg").stat().st_size
    wait_for(lambda: any(key in pool_files(local, n) for n in NODES), 30, "the original stored again")


def test_a_storage_node_that_cannot_be_checked_is_no_all_clear(two_storage: LocalCluster) -> None:
    """A frozen storage node's copies are not judged; the scrub said "no copy is missing" and exited 0 (a cron
    job heard nothing), with an empty error ``TimeoutError: ``. It exits 1 and says why."""
    import signal

    node = two_storage.child("storage2")
    node.proc.send_signal(signal.SIGSTOP)
    try:
        code, out = scrub(two_storage, "--node", "storage2")
    finally:
        node.proc.send_signal(signal.SIGCONT)
    (only,) = out["nodes"]
    assert code == 1 and out["missing_total"] == 0 and only["unreachable"] > 0, out
    assert only["error"] and not only["error"].endswith(": "), only
