"""``POST /api/v1/uploads`` and ``GET /api/v1/uploads/<id>`` on a real web node, with tus to the upload node."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from pixelfox.config import LimitsSettings
from tests.conftest import ClusterHandle
from tests.e2e.uploadkit import big_png

pytestmark = pytest.mark.e2e


def test_browser_style_upload_through_the_web_api(cluster: ClusterHandle, tmp_path: Path) -> None:
    big_png(tmp_path / "p.png", 400)  # new bytes: no dedup with earlier tests' uploads
    data = (tmp_path / "p.png").read_bytes()
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    assert requests.post(api, json={"filename": "a.png", "size": len(data)}, timeout=10).status_code == 401
    assert requests.post(api, json={"size": 0}, headers=key, timeout=10).status_code == 400
    r = requests.post(api, json={"filename": "p.png", "size": len(data), "content_type": "image/png"},
                      headers=key, timeout=10)
    assert r.status_code == 201, r.text
    up = r.json()
    assert set(up) >= {"id", "upload_url", "ticket", "expires_at", "chunk_size"}
    assert up["upload_url"].endswith(f"/tus/{up['id']}") and up["expires_at"].endswith("Z")
    assert up["chunk_size"] == 256 * 1024

    tus = {"Authorization": f"Bearer {up['ticket']}", "Tus-Resumable": "1.0.0",
           "Content-Type": "application/offset+octet-stream"}
    half = len(data) // 2
    assert requests.patch(up["upload_url"], data=data[:half], headers={**tus, "Upload-Offset": "0"},
                          timeout=30).status_code == 204
    p = requests.get(f"{api}/{up['id']}", headers=key, timeout=10).json()
    assert (p["status"], p["offset"], p["size"], p["image"]) == ("open", half, len(data), None)
    assert 0.49 < p["progress"] < 0.51 and p["expires_at"]

    r = requests.patch(up["upload_url"], data=data[half:], headers={**tus, "Upload-Offset": str(half)}, timeout=60)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data))
    deadline = time.monotonic() + 120
    while True:
        p = requests.get(f"{api}/{up['id']}", headers=key, timeout=10).json()
        if p["image"]["status"] != "processing" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert p["status"] == "complete" and p["offset"] == len(data)
    assert p["image"]["status"] == "ready" and p["image"]["filename"] == "p.png"
    assert p["image"]["url"].startswith(cluster.web_url)
    assert requests.get(f"{api}/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=key, timeout=10).status_code == 404


def test_new_upload_fields_are_typed_strictly(cluster: ClusterHandle) -> None:
    """JSON ``"size": "100"`` or ``true`` is a 400 naming the field, not a silent 100 or 1 bytes."""
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    for body in ({"filename": "a.png", "size": "100"}, {"filename": "a.png", "size": True},
                 {"filename": "a.png", "size": 100.5}, {"filename": 7, "size": 100}):
        r = requests.post(api, json=body, headers=key, timeout=10)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["message"].split(":")[0] in ("size", "filename"), r.text


def test_a_size_past_the_upload_limit_is_413_however_large(cluster: ClusterHandle) -> None:
    """A size past int64 is refused like any size over the limit (it got pydantic's "less than or equal
    to 9223372036854775807", a 400), and no upload is created."""
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    limit = LimitsSettings().max_upload_bytes  # the cluster runs with the default
    for size in (limit + 1, 2**63 - 1, 2**63, 99999999999999999999, 10**39):
        r = requests.post(api, json={"filename": "a.png", "size": size}, headers=key, timeout=10)
        assert r.status_code == 413, (size, r.text)
        assert r.json()["error"] == {"code": "payload-too-large",
                                     "message": f"file is {size} bytes; the limit is {limit} bytes"}
    assert requests.post(api, json={"filename": "a.png", "size": limit}, headers=key, timeout=10).status_code == 201


def test_a_cancelled_upload_reads_as_abandoned(cluster: ClusterHandle) -> None:
    """tus DELETE (the client cancelled): the upload's status is "abandoned", not "expired"."""
    key = {"Authorization": f"Bearer {cluster.admin_api_key}"}
    api = f"{cluster.web_url}/api/v1/uploads"
    up = requests.post(api, json={"filename": "c.png", "size": 5000}, headers=key, timeout=10).json()
    tus = {"Authorization": f"Bearer {up['ticket']}", "Tus-Resumable": "1.0.0"}
    assert requests.delete(up["upload_url"], headers=tus, timeout=10).status_code == 204
    p = requests.get(f"{api}/{up['id']}", headers=key, timeout=10).json()
    assert (p["status"], p["offset"], p["image"]) == ("abandoned", 0, None), p
