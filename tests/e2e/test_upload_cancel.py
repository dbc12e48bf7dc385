"""Cancelling an upload leaves nothing behind: its staged bytes, and an original stored just before the cancel.

One private cluster whose upload node sweeps staging every second and holds every finished upload 3 s
between storing its original and ``CompleteUpload`` (failpoint ``before-complete``), so a cancel lands
in that window.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pixelfox.cli.launcher import LocalCluster
from tests.e2e.uploadkit import big_png, new_user_key, own_cluster

pytestmark = pytest.mark.e2e

TUS = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_cluster(tmp_path_factory.mktemp("cancel"), upload=1, web=1, PIXELFOX_SWEEP_INTERVAL_S="1",
                     PIXELFOX_FAILPOINT="before-complete=sleep(3000)") as cluster:
        yield cluster


def _new_upload(local: LocalCluster, key: str, size: int) -> dict[str, str]:
    r = requests.post(f"{local.web_urls[0]}/api/v1/uploads", json={"filename": "c.png", "size": size},
                      headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _patch(up: dict[str, str], data: bytes, offset: int = 0) -> requests.Response:
    return requests.patch(up["upload_url"], data=data, timeout=60,
                          headers={**TUS, "Authorization": f"Bearer {up['ticket']}", "Upload-Offset": str(offset)})


def _cancel(local: LocalCluster, key: str, upload_id: str) -> None:
    r = requests.delete(f"{local.web_urls[0]}/api/v1/uploads/{upload_id}", headers={"Authorization": f"Bearer {key}"},
                        timeout=10)
    assert r.status_code == 204, r.text


def _staged(local: LocalCluster, upload_id: str) -> Path:
    return local.root / ".pixelfox" / "data" / "staging" / f"{upload_id}.part"


def _originals(local: LocalCluster, sha256: str) -> list[Path]:
    return [p for p in (local.root / ".pixelfox" / "data").rglob(f"{sha256}.*") if not p.name.endswith(".meta")]


def _until(check: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_cancelled_uploads_staged_file_goes_at_once_an_open_ones_stays(local: LocalCluster, tmp_path: Path) -> None:
    """Cancelled with no stream writing, its ``.part`` file stayed until its Redis state ended (an hour);
    the sweeper now removes it within seconds. An open upload's file, as old, is kept."""
    key = asyncio.run(new_user_key(local, f"staged_{os.urandom(3).hex()}"))
    big_png(tmp_path / "a.png", 200)
    data = (tmp_path / "a.png").read_bytes()
    cancelled, kept = _new_upload(local, key, len(data)), _new_upload(local, key, len(data))
    for up in (cancelled, kept):
        assert _patch(up, data[: len(data) // 2]).status_code == 204
        assert _staged(local, up["id"]).exists()
    _cancel(local, key, cancelled["id"])
    assert _until(lambda: not _staged(local, cancelled["id"]).exists(), 10)
    time.sleep(2)  # two more sweeps
    assert _staged(local, kept["id"]).stat().st_size == len(data) // 2


def _cancel_while_completing(local: LocalCluster, key: str, data: bytes) -> requests.Response:
    """PATCH all of ``data`` and cancel the upload while its node waits before ``CompleteUpload``."""
    up = _new_upload(local, key, len(data))
    answer: list[requests.Response] = []
    sending = threading.Thread(target=lambda: answer.append(_patch(up, data)))
    sending.start()
    progress = f"{local.web_urls[0]}/api/v1/uploads/{up['id']}"
    assert _until(lambda: requests.get(progress, headers={"Authorization": f"Bearer {key}"}, timeout=10)
                  .json()["offset"] == len(data), 20)  # every byte committed: storing, then the failpoint's 3 s
    time.sleep(0.5)
    _cancel(local, key, up["id"])
    sending.join(30)
    assert _until(lambda: not _staged(local, up["id"]).exists(), 5)
    return answer[0]


def test_an_upload_cancelled_after_its_original_was_stored_leaves_no_original(
        local: LocalCluster, tmp_path: Path) -> None:
    """A cancel between the last chunk and ``CompleteUpload`` left the original on every storage node
    with no image naming it. Now the manager deletes it, unless an image has the same bytes: another
    user's image of them keeps its original."""
    key = asyncio.run(new_user_key(local, f"race_{os.urandom(3).hex()}"))
    other = asyncio.run(new_user_key(local, f"other_{os.urandom(3).hex()}"))
    big_png(tmp_path / "lone.png", 200)
    lone = (tmp_path / "lone.png").read_bytes()
    r = _cancel_while_completing(local, key, lone)
    assert r.status_code == 401 and "cancelled" in r.json()["error"]["message"], r.text
    sha = hashlib.sha256(lone).hexdigest()
    assert _until(lambda: not _originals(local, sha), 10), _originals(local, sha)

    big_png(tmp_path / "shared.png", 200)
    shared = (tmp_path / "shared.png").read_bytes()
    done = _patch(_new_upload(local, other, len(shared)), shared)  # the other user's image of these bytes
    assert done.status_code == 204, done.text
    sha = hashlib.sha256(shared).hexdigest()
    assert _originals(local, sha)
    r = _cancel_while_completing(local, key, shared)
    assert r.status_code == 401, r.text
    time.sleep(2)
    assert _originals(local, sha)  # still stored: the other user's image uses it
    img = requests.get(f"{local.web_urls[0]}/api/v1/images/{done.headers['Pixelfox-Image-Slug']}",
                       headers={"Authorization": f"Bearer {other}"}, timeout=10)
    assert img.status_code == 200, img.text


def _cli_cancel(local: LocalCluster, key: str, upload_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixelfox", "uploads", "cancel", upload_id, "--manager",
                           local.manager_address, "--api-key", key], capture_output=True, text=True, timeout=60,
                          check=False)


def test_a_second_cancel_says_already_cancelled_on_every_front_door(local: LocalCluster) -> None:
    """Cancelling a cancelled upload said "the upload is abandoned, not open" on the web and in the CLI, and
    tus said "expired or never existed" after its own DELETE. Every door now says it was already cancelled:
    409 on the web, exit 2 from ``pixelfox uploads cancel``, 404 from tus (its spec's answer after a
    termination), however the upload was cancelled first."""
    key = asyncio.run(new_user_key(local, f"twice_{os.urandom(3).hex()}"))
    web, bearer = local.web_urls[0], {"Authorization": f"Bearer {key}"}
    said = "nothing to cancel: the upload was already cancelled"
    by_owner, by_client = _new_upload(local, key, 5000), _new_upload(local, key, 5000)
    _cancel(local, key, by_owner["id"])
    tus_client = {"Authorization": f"Bearer {by_client['ticket']}", "Tus-Resumable": "1.0.0"}
    assert requests.delete(by_client["upload_url"], headers=tus_client, timeout=10).status_code == 204
    head = requests.head(by_client["upload_url"], headers=tus_client, timeout=10)
    assert head.status_code == 404  # tus: a terminated upload is gone
    for up in (by_owner, by_client):
        again = requests.delete(f"{web}/api/v1/uploads/{up['id']}", headers=bearer, timeout=10)
        assert (again.status_code, again.json()["error"]) == (409, {"code": "conflict", "message": said}), again.text
        tus = requests.delete(up["upload_url"], headers={"Authorization": f"Bearer {up['ticket']}",
                                                         "Tus-Resumable": "1.0.0"}, timeout=10)
        assert (tus.status_code, tus.json()["error"]) == (404, {"code": "not-found", "message": said}), tus.text
        cli = _cli_cancel(local, key, up["id"])
        assert cli.returncode == 2 and said in cli.stderr, cli.stderr
        progress = requests.get(f"{web}/api/v1/uploads/{up['id']}", headers=bearer, timeout=10).json()
        assert progress["status"] == "abandoned", progress
    # after its client's DELETE a PATCH hears that, not "expired or never existed"
    late = _patch(by_client, b"\x89PNG")
    assert (late.status_code, late.json()["error"]["message"]) == (
        404, "the upload was cancelled by its client (tus DELETE); start a new upload"), late.text
