"""Changes of an image or an album racing a delete of it, or another change (found by a fresh tester).

* A visibility change copies every object of the image to its new keys before its commit; a delete
  landing meanwhile made that commit fail (500, ``StaleDataError``) and left the copies on the storage
  nodes with no row naming them: the private original with its EXIF and GPS, kept for good, unseen by
  ``pixelfox scrub``. Each copy is now journalled until the commit names it
  (:meth:`nodes.manager.objects.Objects.copying`), and the change answers 404 as after the delete.
* A title edit racing a delete answered 500 (``StaleDataError``): now 404.
* Two "add these images" to one album at once: one answered 500 (``IntegrityError``); both apply now.
* An album's owner could not remove (403) an image an admin had added to the album.

Real manager, upload, processing, storage and web nodes; the manager holds each image change 3 s before
its commit (failpoint ``before-change-commit``), which is where a delete lands.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from pixelfox.cli.launcher import LocalCluster
from tests.e2e.uploadkit import auth, new_user_key, own_cluster, until, web_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HOLD_S = 3.0  # the failpoint's pause before an image change's commit


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("change-races"), upload=1, web=1,
                     PIXELFOX_FAILPOINT=f"before-change-commit=sleep({int(HOLD_S * 1000)})") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def key(local: LocalCluster) -> str:
    return asyncio.run(new_user_key(local, f"racer_{os.urandom(3).hex()}"))


def _upload(local: LocalCluster, key: str, seed: int) -> tuple[str, str]:
    """A new ready image of unique bytes: ``(its id, the SHA-256 of its bytes)``."""
    img = Image.new("RGB", (640, 420), (seed % 256, 90, 200))
    img.putpixel((seed % 640, 7), (1, 2, 3))
    path = Path(f"/tmp/pixelfox-race-{os.getpid()}-{seed}.png")
    img.save(path)
    data = path.read_bytes()
    path.unlink()
    r = requests.post(f"{local.web_urls[0]}/api/v1/images", files={"file": ("r.png", data, "image/png")},
                      headers=auth(key), timeout=60)
    assert r.status_code == 201, r.text
    web_ready(local, key, r.json()["id"])
    return str(r.json()["id"]), hashlib.sha256(data).hexdigest()


def _files(local: LocalCluster, sha: str) -> list[Path]:
    """Every file (objects and their ``.meta``) of the storage nodes whose key names ``sha``."""
    return [p for p in (local.root / ".pixelfox" / "data").rglob("*") if p.is_file() and sha in p.as_posix()]


def _in_thread(fn: object, *args: object) -> tuple[threading.Thread, list[requests.Response]]:
    out: list[requests.Response] = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)))  # type: ignore[operator]
    thread.start()
    return thread, out


def _patch(local: LocalCluster, key: str, slug: str, body: dict[str, object]) -> requests.Response:
    return requests.patch(f"{local.web_urls[0]}/api/v1/images/{slug}", json=body, headers=auth(key), timeout=60)


def _delete(local: LocalCluster, key: str, slug: str) -> requests.Response:
    return requests.delete(f"{local.web_urls[0]}/api/v1/images/{slug}", headers=auth(key), timeout=60)


def test_a_visibility_change_racing_a_delete_leaves_no_copy(local: LocalCluster, key: str) -> None:
    slug, sha = _upload(local, key, 1)
    public = [p for p in _files(local, sha) if not p.name.endswith(".meta")]
    assert len(public) >= 7, public  # the original and its variants
    thread, patched = _in_thread(_patch, local, key, slug, {"visibility": "private"})
    # every object copied to the private prefix: the change waits before its commit (HOLD_S)
    until(lambda: len([p for p in _files(local, sha) if "/p/" in p.as_posix() and not p.name.endswith(".meta")])
          >= len(public), 30, "the private copies")
    started = time.monotonic()
    gone = _delete(local, key, slug)
    assert gone.status_code == 200, gone.text
    assert time.monotonic() - started < HOLD_S, "the delete waited for the change"
    thread.join(60)
    assert patched and patched[0].status_code == 404, patched[0].text if patched else "no answer"
    assert patched[0].json()["error"]["message"] == "no such image"
    # the private copies (undone by the change) and the public files (deleted, deferred while the change
    # held the bytes' write fence) all go: nothing of the image stays on disk
    until(lambda: _files(local, sha) == [], 40, "every file of the deleted image to go")
    assert requests.get(f"{local.web_urls[0]}/api/v1/images/{slug}", headers=auth(key), timeout=10).status_code == 404


def test_a_title_edit_racing_a_delete_is_a_404(local: LocalCluster, key: str) -> None:
    slug, sha = _upload(local, key, 2)
    thread, patched = _in_thread(_patch, local, key, slug, {"title": "too late"})
    time.sleep(1.0)  # the edit has read the image and waits before its commit (HOLD_S)
    gone = _delete(local, key, slug)
    assert gone.status_code == 200, gone.text
    thread.join(60)
    assert patched and patched[0].status_code == 404, patched[0].text if patched else "no answer"
    assert patched[0].json()["error"] == {"code": "not-found", "message": "no such image"}
    until(lambda: _files(local, sha) == [], 40, "every file of the deleted image to go")


def _album_patch(local: LocalCluster, key: str, album: str, body: dict[str, object]) -> requests.Response:
    return requests.patch(f"{local.web_urls[0]}/api/v1/albums/{album}", json=body, headers=auth(key), timeout=60)


def test_two_album_additions_at_once_both_apply(local: LocalCluster, key: str) -> None:
    slugs = [_upload(local, key, 10 + n)[0] for n in range(4)]
    for round_ in range(3):
        r = requests.post(f"{local.web_urls[0]}/api/v1/albums", json={"title": f"twice {round_}"},
                          headers=auth(key), timeout=30)
        assert r.status_code == 201, r.text
        album = r.json()["id"]
        barrier = threading.Barrier(2)

        def add(album: str = album, barrier: threading.Barrier = barrier) -> requests.Response:
            barrier.wait(10)
            return _album_patch(local, key, album, {"add_images": slugs})

        threads = [_in_thread(add) for _ in range(2)]
        for thread, _ in threads:
            thread.join(60)
        codes = [out[0].status_code if out else None for _, out in threads]
        assert codes == [200, 200], [out[0].text for _, out in threads if out]
        got = requests.get(f"{local.web_urls[0]}/api/v1/albums/{album}", headers=auth(key), timeout=10).json()
        assert got["image_count"] == 4 and sorted(i["id"] for i in got["images"]) == sorted(slugs), got


def test_an_album_owner_removes_an_image_an_admin_added(local: LocalCluster, key: str) -> None:
    admin = asyncio.run(new_user_key(local, f"boss_{os.urandom(3).hex()}", admin=True))
    mine, _ = _upload(local, key, 20)
    theirs, _ = _upload(local, admin, 21)
    r = requests.post(f"{local.web_urls[0]}/api/v1/albums", json={"title": "mixed"}, headers=auth(key), timeout=30)
    assert r.status_code == 201, r.text
    album = r.json()["id"]
    assert _album_patch(local, key, album, {"add_images": [mine]}).status_code == 200
    added = _album_patch(local, admin, album, {"add_images": [theirs]})
    assert added.status_code == 200 and added.json()["image_count"] == 2, added.text
    # the owner still cannot add it (not theirs), but may make it the cover and remove it
    refused = _album_patch(local, key, album, {"add_images": [theirs]})
    assert refused.status_code == 403, refused.text
    cover = _album_patch(local, key, album, {"cover": theirs})
    assert cover.status_code == 200 and cover.json()["cover"] == theirs, cover.text
    removed = _album_patch(local, key, album, {"remove_images": [theirs]})
    assert removed.status_code == 200, removed.text
    body = removed.json()
    # its cover setting went with it: the cover is the album's first image again
    assert body["image_count"] == 1 and [i["id"] for i in body["images"]] == [mine] and body["cover"] == mine, body
