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
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pixelfox.cli.launcher import LocalCluster
from tests.e2e.uploadkit import auth, big_png, check_served, new_user_key, own_cluster, tus_patch, until, web_ready

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("shared"), upload=1, web=1, PIXELFOX_GC_INTERVAL_S="1",
                     PIXELFOX_FAILPOINT="before-complete=sleep(4000)") as cluster:
        yield cluster


def _upload(local: LocalCluster, key: str, data: bytes) -> dict[str, str]:
    r = requests.post(f"{local.web_urls[0]}/api/v1/uploads", json={"filename": "p.png", "size": len(data)},
                      headers=auth(key), timeout=10)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_deleting_one_users_image_during_anothers_upload_of_the_same_bytes_keeps_them(
        local: LocalCluster, tmp_path: Path) -> None:
    a = asyncio.run(new_user_key(local, f"a_{os.urandom(3).hex()}"))
    b = asyncio.run(new_user_key(local, f"b_{os.urandom(3).hex()}"))
    big_png(tmp_path / "p.png", 300)
    data = (tmp_path / "p.png").read_bytes()

    done = tus_patch(_upload(local, a, data), data)
    assert done.status_code == 204, done.text
    slug_a = done.headers["Pixelfox-Image-Slug"]
    web_ready(local, a, slug_a)

    up = _upload(local, b, data)
    answer: list[requests.Response] = []
    sending = threading.Thread(target=lambda: answer.append(tus_patch(up, data)))
    sending.start()
    progress = f"{local.web_urls[0]}/api/v1/uploads/{up['id']}"
    until(lambda: requests.get(progress, headers=auth(b), timeout=10).json()["offset"] == len(data), 20,
           "B's bytes to be committed")
    time.sleep(1.0)  # stored on the storage node; the upload node now waits before CompleteUpload
    gone = requests.delete(f"{local.web_urls[0]}/api/v1/images/{slug_a}", headers=auth(a), timeout=30)
    assert gone.status_code == 200, gone.text
    sending.join(30)
    assert answer and answer[0].status_code == 204, answer[0].text if answer else "no answer"
    slug_b = answer[0].headers["Pixelfox-Image-Slug"]
    assert slug_b != slug_a

    web_ready(local, b, slug_b)
    check_served(local, b, slug_b, data)
    time.sleep(3)  # a few background delete passes later, still there
    check_served(local, b, slug_b, data)
    assert requests.get(f"{local.web_urls[0]}/api/v1/images/{slug_a}", headers=auth(a), timeout=10).status_code \
        == 404
