"""An image whose files are lost (its only storage node was forgotten): its page, Download, JSON answers, and
its owner's re-upload of the same file, which restores it.

Four storage nodes; each test uploads an image while every storage node but one is in maintenance, so its files
land on that node alone, which is then stopped and forgotten: no storage node has a copy of the image's files.

* Its page says the files are lost (no picture, no empty embed codes, no Download button) and
  ``/i/<id>/download`` says so too. Both used to act as if the image were "still processing": an empty
  ``<img src="">`` in the codes and a 404 "nothing to download yet; the image is still processing".
* ``GET /api/v1/images/<id>`` and the list say ``status: "lost"`` with an ``error`` naming it (they said
  ``ready`` with empty URLs), and the owner's ``pixelfox put`` of the same file restores the image: the same id
  comes back, processed again, its files served (the dedup used to answer with the lost image, unchanged).
* A private image's original has a key of its own (``p/<salt>/``): its owner's re-upload is copied there, the
  image comes back private, its files served from private keys, and the upload's public copy is deleted.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.client.images import FILES_LOST_CODE, FILES_LOST_MESSAGE
from tests.e2e.test_forget_storage import maintenance
from tests.e2e.test_replication import PHOTOS, pool_files, put, wait_for
from tests.e2e.test_status_pools import status_json
from tests.ops.conftest import FAST_REPAIR_ENV, admin_key, cli, start_cluster, status

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def four_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = start_cluster(tmp_path_factory.mktemp("lost-page"), Counts(upload=1, proc=1, storage=4, web=1),
                          {**FAST_REPAIR_ENV, "PIXELFOX_REPAIR__LOST_EVERY_S": "2"})
    try:
        yield local
    finally:
        local.stop()


def auth(local: LocalCluster) -> dict[str, str]:
    """The headers of a JSON API call as the cluster's admin (who uploads with ``pixelfox put``)."""
    return {"Authorization": f"Bearer {admin_key(local)}"}


def api_image(local: LocalCluster, slug: str) -> dict[str, Any]:
    """``GET /api/v1/images/<slug>`` as its owner; asserts 200."""
    got = requests.get(f"{local.web_urls[0]}/api/v1/images/{slug}", headers=auth(local), timeout=30)
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


def lost_image(local: LocalCluster, path: Path, holder: str, *, private: bool = False,
               before: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], int]:
    """Upload ``path`` with ``pixelfox put --json --wait`` while every storage node but ``holder`` is in
    maintenance, so that its files land on ``holder`` alone (made private there with ``private``); call ``before``
    with the put's JSON line; stop and forget ``holder`` and wait until the files count as lost. Returns the put's
    JSON line and ``pixelfox status``'s ``lost_objects`` then."""
    others = [n for n, row in status(local.root).items() if row["role"] == "storage" and n != holder]
    maintenance(local, True, *others)  # until the holder is forgotten: the repair would copy the files to them
    try:
        img = put(local, path)
        if private:
            got = requests.patch(f"{local.web_urls[0]}/api/v1/images/{img['id']}", json={"visibility": "private"},
                                 headers=auth(local), timeout=60)
            assert got.status_code == 200 and got.json()["visibility"] == "private", got.text
        if before is not None:
            before(img)
        lost = status_json(local.root)["lost_objects"]
        local.terminate(holder)  # stopped for good: nothing left for the repair to find
        wait_for(lambda: status(local.root)[holder]["status"] == "stopped", 15, f"{holder} stopped")
        res = cli(local.root, "nodes", "forget", holder)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        maintenance(local, False, *others)
    wait_for(lambda: status_json(local.root)["lost_objects"] > lost, 30, "the image's keys counted lost")
    now: int = status_json(local.root)["lost_objects"]
    return img, now


def put_json(local: LocalCluster, path: Path) -> tuple[int, dict[str, Any]]:
    """``pixelfox put --json --wait path``: its exit code and its one JSON line."""
    res = subprocess.run([sys.executable, "-m", "pixelfox", "put", "--json", "--wait", str(path)], cwd=local.root,
                         capture_output=True, text=True, timeout=180, check=False)
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert len(lines) == 1, res.stdout + res.stderr
    return res.returncode, lines[0]


def test_a_lost_images_page_and_download_say_its_files_are_lost(four_storage: LocalCluster) -> None:
    local = four_storage
    web_url = local.web_urls[0]

    def ready_page(img: dict[str, Any]) -> None:
        page = requests.get(f"{web_url}/i/{img['id']}", timeout=30)
        assert page.status_code == 200 and 'data-status="ready"' in page.text and 'id="download"' in page.text

    img, _ = lost_image(local, PHOTOS / "painting_rgb.png", "storage3", before=ready_page)

    page = requests.get(f"{web_url}/i/{img['id']}", timeout=30)
    assert page.status_code == 200, page.text
    text = html.unescape(page.text)
    assert 'data-status="lost"' in page.text
    assert "This image's files are lost: no storage node has a copy of them any more" in " ".join(text.split())
    assert 'src=""' not in text and "[img][/img]" not in text and 'id="download"' not in page.text
    assert "Still processing" not in text and 'http-equiv="refresh"' not in page.text

    got = requests.get(f"{web_url}/i/{img['id']}/download", allow_redirects=False, timeout=30)
    assert got.status_code == 404, got.text
    assert f"nothing to download: {FILES_LOST_MESSAGE}" in html.unescape(got.text)
    assert "still processing" not in got.text

    # the admin pages' tile of an image with no thumbnail said its status enum's number ("2")
    admin = requests.Session()
    form = admin.get(f"{web_url}/login", timeout=30).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token, form
    login = admin.post(f"{web_url}/login", allow_redirects=False, timeout=30, data={
        "csrf_token": token.group(1), "name": "admin", "password": local.admin_password_file.read_text().strip()})
    assert login.status_code == 303, login.text
    for listing in ("/admin", "/admin/images"):
        page = admin.get(f"{web_url}{listing}", timeout=30)
        tile = re.search(rf'<a href="/i/{img["id"]}">(.*?)</a>', page.text)
        assert page.status_code == 200 and tile, (listing, page.text[-2000:])
        assert tile.group(1) == '<span class="placeholder">lost</span>', (listing, tile.group(1))


def test_the_api_says_an_image_is_lost_and_its_owners_upload_of_the_same_file_restores_it(
    four_storage: LocalCluster,
) -> None:
    local = four_storage
    img, lost_objects = lost_image(local, PHOTOS / "blackbug_alpha.png", "storage2")

    lost = api_image(local, img["id"])
    assert lost["status"] == "lost"
    assert lost["error"] == {"code": FILES_LOST_CODE, "message": FILES_LOST_MESSAGE}
    assert lost["original_url"] == "" and lost["thumbnail_url"] == ""
    assert lost["variants"] and all(v["url"] == "" for v in lost["variants"])
    anonymous = requests.get(f"{local.web_urls[0]}/api/v1/images/{img['id']}", timeout=30)  # the read model's
    assert anonymous.status_code == 200 and anonymous.json()["status"] == "lost", anonymous.text
    listed = requests.get(f"{local.web_urls[0]}/api/v1/images", headers=auth(local), timeout=30)
    assert listed.status_code == 200, listed.text
    row = next(i for i in listed.json()["images"] if i["id"] == img["id"])
    assert row["status"] == "lost" and row["error"]["code"] == FILES_LOST_CODE

    code, again = put_json(local, PHOTOS / "blackbug_alpha.png")  # the owner uploads the same file again
    assert code == 0, again
    assert again["id"] == img["id"] and again["deduplicated"] is True
    assert again["status"] == "ready" and again["error"] is None, again
    assert again["stored_original_url"] and again["variants"]
    for url in [again["stored_original_url"], *(v["url"] for v in again["variants"])]:
        got = requests.get(url, timeout=30)
        assert got.status_code == 200 and got.content, url

    healed = api_image(local, img["id"])
    assert healed["status"] == "ready" and healed["error"] is None
    assert {v["name"] for v in healed["variants"]} == {v["name"] for v in lost["variants"]}
    thumb = requests.get(healed["thumbnail_url"], timeout=30)
    assert thumb.status_code == 200 and thumb.headers["Content-Type"].startswith("image/")
    page = requests.get(f"{local.web_urls[0]}/i/{img['id']}", timeout=30)
    assert page.status_code == 200 and 'data-status="ready"' in page.text and 'id="download"' in page.text
    wait_for(lambda: status_json(local.root)["lost_objects"] < lost_objects, 30, "the image's keys no longer lost")


def test_a_lost_private_image_is_restored_under_its_own_keys(four_storage: LocalCluster) -> None:
    local = four_storage
    img, lost_objects = lost_image(local, PHOTOS / "htc_desire_gps_icc.webp", "storage4", private=True)
    lost = api_image(local, img["id"])
    assert lost["status"] == "lost" and lost["visibility"] == "private", lost
    assert lost["error"] == {"code": FILES_LOST_CODE, "message": FILES_LOST_MESSAGE}

    code, again = put_json(local, PHOTOS / "htc_desire_gps_icc.webp")
    assert code == 0, again
    assert again["id"] == img["id"] and again["deduplicated"] is True
    assert again["status"] == "ready" and again["error"] is None, again
    assert "/o/p/" in again["stored_original_url"], again  # its own private key, a signed URL

    def private_urls() -> list[str]:
        """The healed image's file URLs once every one is on a private key (the job's variants move there
        just after it is ready, as for any job of a private image), else []."""
        healed = api_image(local, img["id"])
        assert healed["status"] == "ready" and healed["visibility"] == "private", healed
        urls = [healed["original_url"], *(v["url"] for v in healed["variants"])]
        return urls if len(urls) > 1 and all("/o/p/" in u for u in urls) else []

    wait_for(private_urls, 30, "the restored private image's files on private keys")
    for url in private_urls():
        got = requests.get(url, timeout=30)
        assert got.status_code == 200 and got.content, url

    def public_copies() -> list[str]:
        return [k for node in ("storage1", "storage2", "storage3") if node in status(local.root)
                for k in pool_files(local, node) if img["sha256"] in k and not k.startswith("p/")]

    # the upload's public copy goes (once the job, a writer of the same bytes, has left the fence), and so do
    # the public variants the job wrote
    wait_for(lambda: public_copies() == [], 30, "no public copy of the private image's bytes")
    wait_for(lambda: status_json(local.root)["lost_objects"] < lost_objects, 30, "the image's keys no longer lost")
