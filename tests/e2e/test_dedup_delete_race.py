"""A re-upload of an image's bytes while that image is being deleted (dedup against a dying image).

The same user uploads a file, then deletes it and uploads the same file again at once. Before the
fix the re-upload's dedup could find the image the delete was removing: about one round in three
answered 201 ``deduplicated`` with that image (gone a moment later, the upload lost) or 404 "no such
image" for a valid upload. Now the delete holds the image's row in a write transaction that the
dedup lookup waits for, so the re-upload is a new image of its own bytes, processed and served,
and the delete of the shared content-addressed original leaves it alone. A re-upload the manager
saw before the delete took the row is that image and goes with it: the manager's log shows which
came first ("answered with its image S" before "deleting image S").

Real manager, upload, processing, storage and web nodes; the manager holds every delete's
transaction 300 ms before its commit (failpoint ``before-delete-commit``), which widens the window.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from tests.e2e.uploadkit import auth, check_served, new_user_key, own_cluster, tus_patch, web_ready
from tests.jobtools import log_text

pytestmark = pytest.mark.e2e

ROUNDS = 20
#: how long after the delete the declared-sha256 re-upload starts. Both reach the manager in one hop
#: (the web node also hashes a small file and declares it at CreateUpload): sent at the same instant,
#: the re-upload may come first and then rightly is the image (which the delete then removes, as asked).
#: By now the delete holds the row, and keeps it 300 ms (failpoint): the lookup lands in that window.
STAGGER_S = 0.1


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("dedup-delete"), upload=1, web=1,
                     PIXELFOX_FAILPOINT="before-delete-commit=sleep(300)") as cluster:
        yield cluster


def _post(local: LocalCluster, key: str, data: bytes) -> requests.Response:
    return requests.post(f"{local.web_urls[0]}/api/v1/images", files={"file": ("r.png", data, "image/png")},
                         headers=auth(key), timeout=60)


def _delete(local: LocalCluster, key: str, slug: str, into: list[requests.Response]) -> None:
    into.append(requests.delete(f"{local.web_urls[0]}/api/v1/images/{slug}", headers=auth(key), timeout=60))


def _uploaded(local: LocalCluster, key: str, n: int, tmp_path: Path) -> tuple[bytes, str]:
    """Upload a new file (round ``n``'s bytes) and wait until it is ready: ``(its bytes, its id)``."""
    path = tmp_path / f"r{n}.png"
    Image.new("RGB", (321, 200), (9, 77, n * 10)).save(path)
    data = path.read_bytes()
    first = _post(local, key, data)
    assert first.status_code == 201, first.text
    web_ready(local, key, first.json()["id"])
    return data, str(first.json()["id"])


@contextlib.contextmanager
def deleting(local: LocalCluster, key: str, slug: str, n: int) -> Iterator[None]:
    """Start deleting ``slug``; the body of the ``with`` runs while it is under way, then it must have
    answered 200."""
    gone: list[requests.Response] = []
    thread = threading.Thread(target=_delete, args=(local, key, slug, gone))
    thread.start()
    yield
    thread.join(60)
    assert gone and gone[0].status_code == 200, (n, gone[0].text if gone else "no answer")


def _came_first(local: LocalCluster, slug: str) -> bool:
    """True when the manager answered a re-upload with image ``slug`` before a delete took its row (its
    log says so in that order): the re-upload was first, and is that image."""
    log = log_text(local, "manager1")
    answered = log.find(f"answered with its image {slug} of the same bytes")
    deleting = log.find(f"deleting image {slug} ")
    return answered != -1 and deleting != -1 and answered < deleting


def test_reupload_during_delete_is_a_new_served_image(local: LocalCluster, tmp_path: Path) -> None:
    """The tester's reproduction, sent at the same instant: the re-upload is a new image, unless the
    manager saw it first (then it is the image, deleted as asked: the order the log shows)."""
    key = asyncio.run(new_user_key(local, f"race_{os.urandom(3).hex()}"))
    new = 0
    for n in range(ROUNDS):
        data, old = _uploaded(local, key, n, tmp_path)
        with deleting(local, key, old, n):
            again = _post(local, key, data)
        assert again.status_code == 201, (n, again.status_code, again.text)
        body = again.json()
        assert requests.get(f"{local.web_urls[0]}/api/v1/images/{old}", headers=auth(key),
                            timeout=10).status_code == 404
        if body["deduplicated"] and body["id"] == old and _came_first(local, old):
            continue
        assert body["deduplicated"] is False and body["id"] != old, (n, body)
        web_ready(local, key, body["id"])
        check_served(local, key, body["id"], data)
        new += 1
    assert new >= ROUNDS // 2, f"only {new} of {ROUNDS} re-uploads came after the delete began"


def test_declared_sha256_during_delete_gets_a_ticket(local: LocalCluster, tmp_path: Path) -> None:
    """The dedup of ``POST /api/v1/uploads`` with the file's sha256 (before any byte is sent): same rule."""
    key = asyncio.run(new_user_key(local, f"sha_{os.urandom(3).hex()}"))
    for n in range(ROUNDS, ROUNDS + ROUNDS // 2):
        data, old = _uploaded(local, key, n, tmp_path)
        with deleting(local, key, old, n):
            time.sleep(STAGGER_S)
            up = requests.post(f"{local.web_urls[0]}/api/v1/uploads", headers=auth(key), timeout=60, json={
                "filename": "r.png", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        assert up.status_code == 201, (n, up.status_code, up.text)
        assert up.json()["deduplicated"] is False, (n, up.json())
        done = tus_patch(up.json(), data)
        assert done.status_code == 204, (n, done.text)
        assert done.headers["Pixelfox-Deduplicated"] == "false", n
        slug = done.headers["Pixelfox-Image-Slug"]
        web_ready(local, key, slug)
        check_served(local, key, slug, data)
