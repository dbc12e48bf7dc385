"""Counts on the admin dashboard read as English on a cluster of its own (only user ``admin``):
"1 user", "0 images", then "1 image" (it said "1 users")."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from tests.conftest import wait_http
from tests.e2e.test_web import Browser
from tests.e2e.uploadkit import own_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _stat(page: str, noun: str) -> str:
    """``"1 user"`` from ``<strong ...>1</strong> user`` on the dashboard."""
    m = re.search(rf"<strong[^>]*>(\d+)</strong> ({noun}s?)\b", page)
    assert m, page
    return f"{m.group(1)} {m.group(2)}"


async def _dashboard(base: str, password: str, key: str) -> None:
    async with aiohttp.ClientSession() as http:
        b = Browser(http, base)
        status, body, _ = await b.post("/login", {"csrf_token": await b.csrf("/login"), "name": "admin",
                                                  "password": password})
        assert status == 303, body
        status, page, _ = await b.get("/admin")
        assert status == 200 and (_stat(page, "user"), _stat(page, "image")) == ("1 user", "0 images"), page
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "PNG")
        form = aiohttp.FormData()
        form.add_field("file", buf.getvalue(), filename="one.png", content_type="image/png")
        async with http.post(f"{base}/api/v1/images?wait=0", data=form,
                             headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 201, await r.text()
        status, page, _ = await b.get("/admin")
        assert _stat(page, "image") == "1 image", page


def test_admin_counts_are_singular_for_one(tmp_path: Path) -> None:
    with own_cluster(tmp_path / "counts", upload=1, web=1) as local:
        wait_http(f"{local.web_urls[0]}/healthz")
        password = local.admin_password_file.read_text().strip()
        key = json.loads((local.state / "cluster.json").read_text())["admin_api_key"]
        asyncio.run(_dashboard(local.web_urls[0], password, key))
