"""Two users, the same bytes: deleting one user's image while the other's upload of them is being
recorded must not lose the other's original or variants (content-addressed keys are shared).

One private cluster (real manager, upload, processing, storage and web nodes) whose upload node holds
every finished upload 4 s between storing its original and ``CompleteUpload`` (failpoint
``before-complete``), and whose manager retries deletes every second (so a retry pass runs too).
Before the write fence, A's delete removed the original B had just stored (no row named it yet):
B's image then failed, its original gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from pixelfox.cli.launcher import LocalCluster
from tests.e2e.uploadkit import big_png, new_user_key, own_cluster

pytestmark = pytest.mark.e2e

TUS = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("shared"), upload=1, web=1, PIXELFOX_GC_INTERVAL_S="1",
                     PIXELFOX_FAILPOINT="before-complete=sleep(4000)") as cluster:
        yield cluster


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _upload(local: LocalCluster, key: str, data: bytes) -> dict[str, str]:
    r = requests.post(f"{local.web_urls[0]}/api/v1/uploads", json={"filename": "p.png", "size": len(data)},
                      headers=_auth(key), timeout=10)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _patch(up: dict[str, str], data: bytes) -> requests.Response:
    return requests.patch(up["upload_url"], data=data, timeout=60,
                          headers={**TUS, "Authorization": f"Bearer {up['ticket']}", "Upload-Offset": "0"})


def _until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return found


def _image(local: LocalCluster, key: str, slug: str) -> dict[str, Any]:
    r = requests.get(f"{local.web_urls[0]}/api/v1/images/{slug}", headers=_auth(key), timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _ready(local: LocalCluster, key: str, slug: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        img = _image(local, key, slug)
        assert img["status"] != "failed", img["error"]
        return img if img["status"] == "ready" else None
    return dict(_until(done, 90, f"image {slug} to be ready"))


def _check_served(local: LocalCluster, key: str, slug: str, data: bytes) -> None:
    """Every variant of ``slug`` is served over HTTP with the size it claims, and its stored original is
    served byte for byte."""
    img = _image(local, key, slug)
    assert img["variants"], img
    for v in img["variants"]:
        r = requests.get(v["url"], timeout=10)
        assert r.status_code == 200, (v, r.status_code)
        assert len(r.content) == v["bytes"], v
        assert Image.open(io.BytesIO(r.content)).size == (v["width"], v["height"]), v
    r = requests.patch(f"{local.web_urls[0]}/api/v1/images/{slug}", json={"keep_metadata": True},
                       headers=_auth(key), timeout=10)  # original_url is then the stored original
    assert r.status_code == 200, r.text
    original = requests.get(_image(local, key, slug)["original_url"], timeout=10)
    assert original.status_code == 200, original.status_code
    assert hashlib.sha256(original.content).hexdigest() == hashlib.sha256(data).hexdigest()


def test_deleting_one_users_image_during_anothers_upload_of_the_same_bytes_keeps_them(
        local: LocalCluster, tmp_path: Path) -> None:
    a = asyncio.run(new_user_key(local, f"a_{os.urandom(3).hex()}"))
    b = asyncio.run(new_user_key(local, f"b_{os.urandom(3).hex()}"))
    big_png(tmp_path / "p.png", 300)
    data = (tmp_path / "p.png").read_bytes()

    done = _patch(_upload(local, a, data), data)
    assert done.status_code == 204, done.text
    slug_a = done.headers["Pixelfox-Image-Slug"]
    _ready(local, a, slug_a)

    up = _upload(local, b, data)
    answer: list[requests.Response] = []
    sending = threading.Thread(target=lambda: answer.append(_patch(up, data)))
    sending.start()
    progress = f"{local.web_urls[0]}/api/v1/uploads/{up['id']}"
    _until(lambda: requests.get(progress, headers=_auth(b), timeout=10).json()["offset"] == len(data), 20,
           "B's bytes to be committed")
    time.sleep(1.0)  # stored on the storage node; the upload node now waits before CompleteUpload
    gone = requests.delete(f"{local.web_urls[0]}/api/v1/images/{slug_a}", headers=_auth(a), timeout=30)
    assert gone.status_code == 200, gone.text
    sending.join(30)
    assert answer and answer[0].status_code == 204, answer[0].text if answer else "no answer"
    slug_b = answer[0].headers["Pixelfox-Image-Slug"]
    assert slug_b != slug_a

    _ready(local, b, slug_b)
    _check_served(local, b, slug_b, data)
    time.sleep(3)  # a few background delete passes later, still there
    _check_served(local, b, slug_b, data)
    assert requests.get(f"{local.web_urls[0]}/api/v1/images/{slug_a}", headers=_auth(a), timeout=10).status_code \
        == 404
