"""An upload that asks to be private (``visibility=private`` on ``POST /api/v1/images``, ``POST /api/v1/uploads``
and Chevereto's upload; ``pixelfox put --private``) is a private image from its first answer on: its original and
every variant live under ``p/<salt>/`` keys, the public copy of its original is gone, and a public image of the
same bytes is never its answer (it makes a private image of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import requests

from pixelfox import signing
from pixelfox.cli.launcher import LocalCluster
from pixelfox.grpcx.auth import api_key_metadata
from pixelfox.storage.keys import needs_signature
from pixelfox.uploadstate import state_key
from pixelfox.v1 import manager_pb2, manager_pb2_grpc, upload_pb2
from tests.conftest import ClusterHandle
from tests.e2e.uploadkit import (
    auth,
    big_png,
    chunk,
    header,
    new_user_key,
    own_cluster,
    tus_patch,
    until,
    upload_stub,
)

pytestmark = pytest.mark.e2e

#: a private image's file URL: ``<storage base>/o/p/<salt>/<key>?exp=...&sig=...``
PRIVATE_URL = re.compile(r"(?P<base>https?://[^/]+(?:/[^?]*?)?)/o/p/[0-9a-f]{32}/(?P<key>[^?]+)\?.*sig=")


def _user_key(cluster: ClusterHandle) -> str:
    """A fresh user's API key: its images are its own (no dedup with other tests' uploads)."""
    return asyncio.run(new_user_key(cluster.local, f"priv{uuid.uuid4().hex[:10]}"))


def _png(tmp_path: Path, name: str) -> tuple[bytes, str]:
    """New PNG bytes (no other test has them) and their SHA-256."""
    sha = big_png(tmp_path / name, 64)
    return (tmp_path / name).read_bytes(), sha


def _ready(cluster: ClusterHandle, key: str, slug: str) -> dict[str, Any]:
    """Image ``slug`` as its owner sees it once ready (90 s at most)."""
    def done() -> dict[str, Any] | None:
        r = requests.get(f"{cluster.web_url}/api/v1/images/{slug}", headers=auth(key), timeout=10)
        assert r.status_code == 200, r.text
        return r.json() if r.json()["status"] == "ready" else None
    return dict(until(done, 90, f"image {slug} to be ready"))


def local_handle(local: LocalCluster) -> ClusterHandle:
    """A handle on ``local`` (an :func:`own_cluster`) for the helpers above: its first web node, no admin key."""
    return ClusterHandle(local, local.root, local.web_urls[0], local.manager_address, local.secret, local.redis_url,
                         "")


def _public_files(cluster: ClusterHandle, sha: str) -> list[str]:
    """The stored files of bytes ``sha`` (original and variants) under public keys."""
    return [str(p) for p in cluster.storage_files() if sha in str(p) and "/p/" not in str(p).split("/data/", 1)[-1]]


def _private_files(cluster: ClusterHandle, sha: str) -> list[str]:
    return [str(p) for p in cluster.storage_files() if sha in str(p) and "/p/" in str(p).split("/data/", 1)[-1]]


def _public_url(base: str, key: str, secret: str) -> str:
    """The URL of public key ``key`` on the storage URL ``base``, signed with the cluster ``secret`` when the key
    is served only so (an original: :func:`~pixelfox.storage.keys.needs_signature`), so a 404 means no file."""
    if not needs_signature(key):
        return f"{base}/o/{key}"
    return f"{base}/o/{key}?{signing.sign(signing.keys_from(secret)[0], key, int(time.time()) + 600)}"


def assert_private(cluster: ClusterHandle, key: str, image: dict[str, Any]) -> None:
    """``image`` (an upload's JSON, ready) is private: every file URL is signed under ``p/<salt>/`` and serves
    200, the same keys without the prefix (the public content-addressed URLs) are 404 once the public copies
    are gone, no file of its bytes is stored under a public key, and anonymous callers get 404 for its page
    and its API entry. Its stored original (``keep_metadata``) is under a private key too."""
    assert (image["status"], image["visibility"]) == ("ready", "private"), image
    r = requests.patch(f"{cluster.web_url}/api/v1/images/{image['id']}", json={"keep_metadata": True},
                       headers=auth(key), timeout=10)  # original_url is then the stored original
    assert r.status_code == 200 and r.json()["visibility"] == "private", r.text
    urls = [r.json()["original_url"], *(v["url"] for v in r.json()["variants"])]
    assert len(urls) > 1 and all(PRIVATE_URL.match(u) for u in urls), urls
    assert [requests.get(u, timeout=10).status_code for u in urls] == [200] * len(urls)
    public = [_public_url(m["base"], m["key"], cluster.secret) for m in (PRIVATE_URL.match(u) for u in urls) if m]
    assert any(f"/o/o/{image['sha256'][:2]}/" in u for u in public), public  # the original's public URL
    until(lambda: not _public_files(cluster, image["sha256"]), 30, "the public copies to be deleted")
    assert [requests.get(u, timeout=10).status_code for u in public] == [404] * len(public)
    assert _private_files(cluster, image["sha256"])
    assert requests.get(f"{cluster.web_url}/i/{image['id']}", timeout=10).status_code == 404
    assert requests.get(f"{cluster.web_url}/api/v1/images/{image['id']}", timeout=10).status_code == 404


def test_a_private_upload_is_private_from_its_first_answer(cluster: ClusterHandle, tmp_path: Path) -> None:
    key = _user_key(cluster)
    data, sha = _png(tmp_path, "form.png")
    images = f"{cluster.web_url}/api/v1/images"
    r = requests.post(images, headers=auth(key), data={"visibility": "private", "title": "mine"},
                      files={"file": ("form.png", data, "image/png")}, timeout=60)
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["visibility"], first["deduplicated"], first["title"], first["sha256"]) == (
        "private", False, "mine", sha), first
    assert all(PRIVATE_URL.match(v["url"]) for v in first["variants"]), first  # none under a public key
    assert_private(cluster, key, _ready(cluster, key, first["id"]))

    # its bytes uploaded private again: that private image is the answer (dedup), in the query string too
    again = requests.post(f"{images}?visibility=private", headers=auth(key),
                          files={"file": ("again.png", data, "image/png")}, timeout=60)
    assert again.status_code == 201, again.text
    assert (again.json()["id"], again.json()["deduplicated"], again.json()["visibility"]) == (
        first["id"], True, "private"), again.text

    # Chevereto's upload takes the field too
    other, _ = _png(tmp_path, "chevereto.png")
    c = requests.post(f"{cluster.web_url}/api/1/upload", headers={"X-API-Key": key}, data={"visibility": "private"},
                      files={"source": ("c.png", other, "image/png")}, timeout=60)
    assert c.status_code == 200 and c.json()["image"]["visibility"] == "private", c.text
    assert requests.get(c.json()["image"]["url_viewer"], timeout=10).status_code == 404  # nobody else sees it


def test_a_private_upload_of_a_public_images_bytes_makes_its_own_image(cluster: ClusterHandle, tmp_path: Path
                                                                         ) -> None:
    """Over ``POST /api/v1/uploads`` and tus, with the file's SHA-256 declared (CreateUpload's early dedup) and
    without: the user's public image of the same bytes is never the answer of a private upload."""
    key = _user_key(cluster)
    data, sha = _png(tmp_path, "shared.png")
    r = requests.post(f"{cluster.web_url}/api/v1/images", headers=auth(key),
                      files={"file": ("shared.png", data, "image/png")}, timeout=60)
    assert r.status_code == 201 and r.json()["visibility"] == "public", r.text
    public = r.json()

    def private_upload(declared: str) -> requests.Response:
        return requests.post(f"{cluster.web_url}/api/v1/uploads", headers=auth(key), timeout=10, json={
            "filename": "shared.png", "size": len(data), "content_type": "image/png", "sha256": declared,
            "visibility": "private"})

    def sent(ticket: requests.Response) -> dict[str, Any]:
        """The upload's JSON once ``data`` went in one tus PATCH to ``ticket``."""
        assert ticket.status_code == 201 and ticket.json()["deduplicated"] is False, ticket.text
        assert tus_patch(ticket.json(), data).status_code == 204
        p = requests.get(f"{cluster.web_url}/api/v1/uploads/{ticket.json()['id']}", headers=auth(key), timeout=10)
        assert p.status_code == 200 and p.json()["status"] == "complete", p.text
        return dict(p.json())

    # the hash declared: CreateUpload's early dedup passes the public image over, and so does the completion's
    first = sent(private_upload(sha))
    mine = first["image"]
    assert (first["deduplicated"], mine["visibility"]) == (False, "private"), first
    assert mine["id"] != public["id"]
    ready = _ready(cluster, key, mine["id"])
    assert ready["visibility"] == "private" and ready["variants"], ready
    assert all(PRIVATE_URL.match(v["url"]) for v in ready["variants"]), ready
    assert [requests.get(v["url"], timeout=10).status_code for v in ready["variants"]] == [200] * len(
        ready["variants"])
    # now that private image is the answer: at once with the hash declared, at the completion without
    known = private_upload(sha)
    assert known.status_code == 200, known.text
    assert (known.json()["deduplicated"], known.json()["image"]["id"]) == (True, mine["id"]), known.text
    again = sent(private_upload(""))
    assert (again["deduplicated"], again["image"]["id"]) == (True, mine["id"]), again

    # the public image is as it was: public, its links open for anyone
    still = requests.get(f"{cluster.web_url}/api/v1/images/{public['id']}", timeout=10)
    assert still.status_code == 200 and still.json()["visibility"] == "public", still.text
    assert requests.get(f"{cluster.web_url}/i/{public['id']}", timeout=10).status_code == 200
    assert [requests.get(v["url"], timeout=10).status_code for v in still.json()["variants"]] == [200] * len(
        still.json()["variants"])
    assert requests.get(f"{cluster.web_url}/api/v1/images/{mine['id']}", timeout=10).status_code == 404


def test_put_private(cluster: ClusterHandle, tmp_path: Path) -> None:
    path = tmp_path / "put.png"
    sha = big_png(path, 64)
    r = cluster.pixelfox("put", "--private", "--json", "--wait", str(path), timeout=180)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["status"], out["visibility"], out["deduplicated"], out["sha256"]) == ("ready", "private", False, sha)
    urls = [out["stored_original_url"], *(v["url"] for v in out["variants"])]
    assert all(PRIVATE_URL.match(u) for u in urls), urls
    assert [requests.get(u, timeout=10).status_code for u in urls] == [200] * len(urls)
    assert requests.get(out["url"], timeout=10, allow_redirects=False).status_code == 404  # its page: nobody else
    until(lambda: not _public_files(cluster, sha), 30, "the public copies to be deleted")
    people = cluster.pixelfox("put", "--private", "--no-resume", str(tmp_path / "put.png"), timeout=120)
    assert people.returncode == 0 and people.stdout == f"{out['url']}\n", (people.stdout, people.stderr)
    assert "ready, private" in people.stderr or "processing, private" in people.stderr, people.stderr


def test_an_upload_visibility_must_be_public_or_private(cluster: ClusterHandle, tmp_path: Path) -> None:
    """Anything else is a 400 naming it, in the form, the query string, the JSON of ``POST /api/v1/uploads``
    and Chevereto's form, and nothing is uploaded; so is a private anonymous upload (nobody could see it)."""
    key = _user_key(cluster)
    data, sha = _png(tmp_path, "bogus.png")
    api = f"{cluster.web_url}/api/v1/images"
    said = "visibility must be public or private, not 'bogus'"
    for url, form in ((f"{api}?wait=0", {"visibility": "bogus"}), (f"{api}?wait=0&visibility=bogus", {})):
        bad = requests.post(url, headers=auth(key), data=form, files={"file": ("b.png", data, "image/png")},
                            timeout=60)
        assert (bad.status_code, bad.json()["error"]["message"]) == (400, said), bad.text
    twice = requests.post(f"{api}?wait=0&visibility=private", headers=auth(key), data={"visibility": "private"},
                          files={"file": ("b.png", data, "image/png")}, timeout=60)
    assert (twice.status_code, twice.json()["error"]["message"]) == (
        400, "visibility was sent in both the query string and the form: send it once"), twice.text
    ticket = requests.post(f"{cluster.web_url}/api/v1/uploads", headers=auth(key), timeout=10,
                           json={"filename": "b.png", "size": len(data), "visibility": "bogus"})
    assert (ticket.status_code, ticket.json()["error"]["message"]) == (400, said), ticket.text
    c = requests.post(f"{cluster.web_url}/api/1/upload", headers={"X-API-Key": key}, data={"visibility": "bogus"},
                      files={"source": ("b.png", data, "image/png")}, timeout=60)
    assert c.status_code == 400 and c.json()["error"]["message"] == said, c.text
    anonymous = requests.post(f"{api}?wait=0&visibility=private", files={"file": ("b.png", data, "image/png")},
                              timeout=60)
    assert anonymous.status_code in (400, 401), anonymous.text  # 401 on a site that takes no anonymous uploads
    if anonymous.status_code == 400:
        assert anonymous.json()["error"]["message"].startswith("an anonymous upload cannot be private"), anonymous.text
    mine = requests.get(f"{api}?limit=100", headers=auth(key), timeout=30)
    assert mine.status_code == 200 and mine.json()["images"] == [], mine.text  # nothing was uploaded
    assert not _public_files(cluster, sha) and not _private_files(cluster, sha)


def test_a_private_upload_whose_copy_fails_fails_and_is_never_public(tmp_path: Path) -> None:
    """The storage node stops while the upload node holds the stored original (``before-complete``): the
    manager cannot copy it to a private key, so the upload fails with that reason (GET /api/v1/uploads says
    so), and no image is made: not a public one instead."""
    with own_cluster(tmp_path / "c", upload=1, web=1, PIXELFOX_FAILPOINT="before-complete=sleep(3000)") as local:
        key = asyncio.run(new_user_key(local, "privfail"))
        data, sha = _png(tmp_path, "fail.png")
        web = local.web_urls[0]
        r = requests.post(f"{web}/api/v1/uploads", headers=auth(key), timeout=10,
                          json={"filename": "fail.png", "size": len(data), "visibility": "private"})
        assert r.status_code == 201, r.text
        with ThreadPoolExecutor(1) as pool:
            patch = pool.submit(tus_patch, r.json(), data)
            until(lambda: any(sha in str(p) for p in (local.root / ".pixelfox" / "data").glob("storage1/**/*")
                              if p.is_file()), 20, "the original to be stored")
            local.terminate("storage1")  # during the upload node's pause before CompleteUpload
            done = patch.result(60)
        assert done.status_code == 503, (done.status_code, done.text)
        p = requests.get(f"{web}/api/v1/uploads/{r.json()['id']}", headers=auth(key), timeout=10)
        assert p.status_code == 200 and p.json()["status"] == "failed" and p.json()["image"] is None, p.text
        assert p.json()["error"]["code"] == "no-node-available", p.text
        assert "could not be copied to a private key" in p.json()["error"]["message"], p.text
        mine = requests.get(f"{web}/api/v1/images?limit=100", headers=auth(key), timeout=10)
        assert mine.status_code == 200 and mine.json()["images"] == [], mine.text  # no image, public or not


def test_a_private_upload_whose_redis_state_is_gone_before_completion_stays_private(tmp_path: Path) -> None:
    """The upload's Redis state vanishes (expired, or a Redis that lost its data) while the upload node pauses
    before ``CompleteUpload`` (``before-complete``): the image is still made as ``CreateUpload`` asked, from the
    upload's database row: private, with its title, expiring. Before, such a completion made a public,
    untitled, lasting image of an upload that asked to be private."""
    with own_cluster(tmp_path / "c", upload=1, web=1, PIXELFOX_FAILPOINT="before-complete=sleep(3000)") as local:
        key = asyncio.run(new_user_key(local, "privgone"))
        data, sha = _png(tmp_path, "gone.png")
        store = redis.Redis.from_url(local.redis_url)

        async def upload() -> upload_pb2.UploadReceipt:
            async with grpc.aio.insecure_channel(local.manager_address.split(",")[0]) as ch:
                t = await manager_pb2_grpc.ManagerServiceStub(ch).CreateUpload(manager_pb2.CreateUploadRequest(
                    filename="gone.png", size=len(data), content_type="image/png", title="kept title",
                    expire_after_s=7200, visibility="private"), metadata=api_key_metadata(key), timeout=10)
            assert store.exists(state_key(t.upload_id)) == 1
            uch, stub = upload_stub(t.upload_address)
            try:
                call = stub.Upload()
                await call.write(header(t, len(data), sha))
                for off in range(0, len(data), 256 * 1024):
                    await call.write(chunk(off, data[off:off + 256 * 1024]))
                await call.done_writing()
                stored = await asyncio.to_thread(until, lambda: any(
                    sha in str(p) for p in (local.root / ".pixelfox" / "data").glob("storage1/**/*") if p.is_file()),
                    20, "the original to be stored")
                assert stored and store.delete(state_key(t.upload_id)) == 1  # in the pause before CompleteUpload
                return await call
            finally:
                await uch.close()

        receipt = asyncio.run(upload())
        assert receipt.image.slug and receipt.image.visibility == "private", receipt
        image = _ready(local_handle(local), key, receipt.image.slug)
        assert (image["title"], image["visibility"]) == ("kept title", "private"), image
        expires = datetime.fromisoformat(image["expires_at"].replace("Z", "+00:00"))
        assert 7000 < (expires - datetime.now(UTC)).total_seconds() <= 7200, image["expires_at"]
        assert _private_files(local_handle(local), sha) and not _public_files(local_handle(local), sha)


#: the processing node holds each result this long after storing its variants (``before-result``): long enough
#: for two visibility changes (each copies every file of the image) on a loaded 2-core machine
RESULT_PAUSE_S = 10.0
#: a private file's place in a storage pool: ``.../p/<salt>/<public key>``
POOL_PRIVATE = re.compile(r"/p/(?P<salt>[0-9a-f]{32})/[ov]/")


@pytest.fixture(scope="module")
def held_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """A cluster of its own (1 storage, 1 proc, 1 upload, 1 web node) whose processing node waits
    :data:`RESULT_PAUSE_S` between storing a job's variants and reporting them (failpoint ``before-result``):
    the pool then shows what a job wrote before the manager recorded anything."""
    root = tmp_path_factory.mktemp("held")
    with own_cluster(root, upload=1, web=1,
                     PIXELFOX_FAILPOINT=f"before-result=sleep({int(RESULT_PAUSE_S * 1000)})") as local:
        state = json.loads((root / ".pixelfox" / "cluster.json").read_text())
        yield ClusterHandle(local, root, local.web_urls[0], local.manager_address, state["secret"],
                            local.redis_url, state["admin_api_key"])


class PoolWatch:
    """Every stored file of bytes ``sha`` seen in ``cluster``'s storage pools, looked at every 50 ms from
    ``start()`` to ``stop()`` (in a thread), so a file that existed for a moment is seen too."""

    def __init__(self, cluster: ClusterHandle, sha: str) -> None:
        self.cluster, self.sha = cluster, sha
        self.seen: set[str] = set()
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # a file deleted while the folders are walked
                self.seen.update(str(p).split("/data/", 1)[-1] for p in self.cluster.storage_files()
                                 if self.sha in str(p) and not p.name.endswith(".meta"))
                self.looks += 1
            self._stop.wait(0.05)

    def start(self) -> PoolWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def public_variants(self) -> list[str]:
        return sorted(f for f in self.seen if f"/v/{self.sha[:2]}/" in f and not POOL_PRIVATE.search(f))


def _variant_files(cluster: ClusterHandle, sha: str, marker: str = "") -> list[str]:
    """The stored variant files of bytes ``sha`` (their paths inside the data folder), those whose path has
    ``marker`` only."""
    return sorted(rel for p in cluster.storage_files()
                  if f"/v/{sha[:2]}/{sha[2:4]}/{sha}/" in (rel := str(p).split("/data/", 1)[-1])
                  and marker in rel and not p.name.endswith(".meta"))


def _url_salt(url: str) -> str:
    """The private salt a file URL names (``""`` for a public URL)."""
    m = re.search(r"/o/p/([0-9a-f]{32})/", url)
    return m[1] if m else ""


def _salts(files: list[str]) -> set[str]:
    """The private salts in ``files`` (``""`` for a file under a public key)."""
    return {m["salt"] if (m := POOL_PRIVATE.search(f)) else "" for f in files}


def test_a_private_uploads_variants_are_never_stored_under_public_keys(held_results: ClusterHandle,
                                                                       tmp_path: Path) -> None:
    """The processing job of a private upload writes every variant under the image's ``p/<salt>/`` prefix:
    while the job holds its result (variants stored, nothing recorded, the image still processing) the pool
    has them there, under the salt of the image's private original, and never, from the upload to the end,
    a variant of those bytes under a public key."""
    cluster = held_results
    key = _user_key(cluster)
    data, sha = _png(tmp_path, "held.png")
    watch = PoolWatch(cluster, sha).start()
    try:
        r = requests.post(f"{cluster.web_url}/api/v1/images?wait=0", headers=auth(key),
                          data={"visibility": "private"}, files={"file": ("held.png", data, "image/png")}, timeout=60)
        assert r.status_code == 201 and r.json()["visibility"] == "private", r.text
        slug = r.json()["id"]
        stored = until(lambda: _variant_files(cluster, sha), 60, "the job to store its variants")
        image = requests.get(f"{cluster.web_url}/api/v1/images/{slug}", headers=auth(key), timeout=10).json()
        assert image["status"] == "processing", image  # the job holds its result: nothing recorded yet
        originals = [f for f in _private_files(cluster, sha) if f"/o/{sha[:2]}/" in f]
        salts = _salts([f.split("/data/", 1)[-1] for f in originals])
        assert len(salts) == 1 and "" not in salts, originals  # the private original's salt
        assert _salts(stored) == salts, stored  # every variant under it, none under a public key
        ready = _ready(cluster, key, slug)
        assert ready["variants"] and all(PRIVATE_URL.match(v["url"]) for v in ready["variants"]), ready
        assert {_url_salt(v["url"]) for v in ready["variants"]} == salts, ready
        assert_private(cluster, key, ready)
        time.sleep(1.0)  # the watch has another look after the last deletes
    finally:
        watch.stop()
    assert watch.looks > 20, watch.looks
    assert watch.public_variants() == [], watch.public_variants()
    assert not _public_files(cluster, sha)


def _reprocess(cluster: ClusterHandle, slug: str, recipe: int) -> None:
    r = cluster.pixelfox("reprocess", slug, "--recipe", str(recipe), "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0]) == {"slug": slug, "queued": True}, r.stdout


@pytest.mark.parametrize("changes", [("public",), ("public", "private")], ids=["public", "private-again"])
def test_a_visibility_change_while_a_job_holds_its_result(held_results: ClusterHandle, tmp_path: Path,
                                                          changes: tuple[str, ...]) -> None:
    """A private image's reprocess (to a new recipe) stores its variants under the image's ``p/<salt>/``; the
    owner then makes the image public (and private again: a new salt) before the job reports. The manager
    moves the new variants to the keys that fit the image once they are recorded (its log says so): it ends
    ready with the visibility asked, every variant of the new recipe under its public key (or the new salt)
    serving 200, and no file of its bytes left under the first salt (nor, private again, under a public key).

    The image is ready all along, so for the moment between the record and the move (about a second) its
    owner's answer may name the new variants under the first salt; the test waits for the move."""
    cluster = held_results
    key = _user_key(cluster)
    data, sha = _png(tmp_path, "flip.png")
    r = requests.post(f"{cluster.web_url}/api/v1/images", headers=auth(key), data={"visibility": "private"},
                      files={"file": ("flip.png", data, "image/png")}, timeout=60)
    assert r.status_code == 201, r.text
    slug = r.json()["id"]
    before = _ready(cluster, key, slug)
    first_salts = _salts(_variant_files(cluster, sha))
    assert len(first_salts) == 1 and "" not in first_salts, _variant_files(cluster, sha)
    old_recipe = int(re.findall(r"/r(\d+)/", before["variants"][0]["url"])[0])
    new_recipe = old_recipe + 1
    log = cluster.root / ".pixelfox" / "logs" / "manager1.log"
    log_start = log.stat().st_size
    _reprocess(cluster, slug, new_recipe)
    stored = until(lambda: _variant_files(cluster, sha, f"/r{new_recipe}/"), 120, "the re-run to store its variants")
    assert _salts(stored) == first_salts, stored  # written under the image's salt at dispatch
    for visibility in changes:  # while the job holds its result
        p = requests.patch(f"{cluster.web_url}/api/v1/images/{slug}", json={"visibility": visibility},
                           headers=auth(key), timeout=30)
        assert p.status_code == 200 and p.json()["visibility"] == visibility, p.text
    # the job has not reported yet (else the pause was too short for this machine: the race was not met)
    assert all(f"/r{old_recipe}/" in v["url"] for v in p.json()["variants"]), p.text

    def rerun_moved() -> dict[str, Any] | None:
        img = _ready(cluster, key, slug)
        urls = [v["url"] for v in img["variants"]]
        fit = not {_url_salt(u) for u in urls} & first_salts
        return img if urls and fit and all(f"/r{new_recipe}/" in u for u in urls) else None

    after = until(rerun_moved, 120, "the re-run to be recorded and moved to the keys that fit")
    moved = re.findall(r"image \w+ \((\w+)\): (\d+) variants moved to the keys that fit it",
                       log.read_text(errors="replace")[log_start:])
    assert moved == [(changes[-1], str(len(after["variants"])))], moved  # the move after the record did it
    assert after["visibility"] == changes[-1], after
    urls = [v["url"] for v in after["variants"]]
    if changes[-1] == "public":
        assert not any(PRIVATE_URL.match(u) or "/p/" in u for u in urls), urls
        assert requests.get(f"{cluster.web_url}/api/v1/images/{slug}", timeout=10).status_code == 200  # anyone
    else:
        new_salts = {_url_salt(u) for u in urls}
        assert len(new_salts) == 1 and "" not in new_salts, (urls, first_salts)
    assert [requests.get(u, timeout=10).status_code for u in urls] == [200] * len(urls)

    def settled() -> bool:
        files = _variant_files(cluster, sha)
        salts = _salts(files)
        return bool(files) and all(f"/r{new_recipe}/" in f for f in files) and len(salts) == 1 and (
            (salts == {""}) if changes[-1] == "public" else "" not in salts and not salts & first_salts)

    until(settled, 30, f"only the re-run's variants under the keys that fit, not {_variant_files(cluster, sha)}")
