"""An upload the cluster cannot take for now, on the upload page in Debian's chromium: every storage node
in maintenance makes the manager answer 503 ("no storage node takes new files ...; try again later").
That is no refusal of the file: the row is not ``li.refused`` but ``li.stopped``, its preview ``<img>``
stays, and the server's message is shown as an alert. It used to be shown as a refusal (a ✕ box in place
of the preview), as for a file that is not an image. Anonymously (one multipart POST) and signed in (tus).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.site import new_page, user_page
from tests.browser.test_anonymous_upload import random_png

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

STORAGE = ("storage1", "storage2")  # the session cluster's storage nodes (tests/conftest.py)
PASSWORD = "unavailable password 1"


@pytest.fixture
def storage_in_maintenance(cluster: Any) -> Iterator[None]:
    """Every storage node of the session cluster in maintenance for the test, ended after it."""
    try:
        for node in STORAGE:
            res = cluster.pixelfox("nodes", "maintenance", node)
            assert res.returncode == 0, res.stdout + res.stderr
        yield
    finally:
        for node in STORAGE:
            res = cluster.pixelfox("nodes", "maintenance", node, "--off")
            assert res.returncode == 0, res.stdout + res.stderr


async def check_stopped(page: Any, name: str, says: tuple[str, ...] = ("no storage node takes new files",
                                                                       "try again later")) -> None:
    """The row of ``name`` ends stopped with the server's message (``says``: the manager's 503 by default),
    its preview still there."""
    row = page.locator("#uploads li.upload", has=page.locator(".name", has_text=name))
    await expect(row).to_have_class(re.compile(r"\bstopped\b"), timeout=60_000)
    await expect(row).not_to_have_class(re.compile(r"\brefused\b"))
    state = row.locator(".state")
    await expect(state).to_have_attribute("role", "alert")
    for words in says:
        await expect(state).to_contain_text(words)
    img = row.locator("img.thumb")
    await expect(img).to_have_count(1)
    await expect(img).to_have_attribute("src", re.compile(r"^blob:"))
    assert await img.evaluate("i => i.complete && i.naturalWidth > 0")
    await expect(row.locator(".thumb.none")).to_have_count(0)


async def test_a_503_keeps_the_preview(cluster: Any, chromium: Any, storage_in_maintenance: None) -> None:
    base = cluster.web_url
    ctx, page = await new_page(chromium)  # CSP enforced
    await page.goto(f"{base}/")
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/api/v1/images") else None)
    name = f"later_{uuid.uuid4().hex[:8]}.png"
    await page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": random_png()}])
    await check_stopped(page, name)
    assert statuses == [503], statuses
    await ctx.close()

    # signed in, the page asks for a tus upload first (POST /api/v1/uploads): the same 503
    _, ctx, page = await user_page(chromium, base, PASSWORD, "later")
    assert await page.get_attribute("#drop", "data-resumable") == "1"
    name = f"later_{uuid.uuid4().hex[:8]}.png"
    await page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": random_png()}])
    await check_stopped(page, name)
    await ctx.close()


async def test_a_408_keeps_the_preview(cluster: Any, chromium: Any) -> None:
    """A body that stopped arriving on the way (the web node's 408 ``body-timeout``, web/bodies.py) says
    "send it again": the page showed it as a refused file (a tester's find). The answer is the web node's
    own words, put in place of the real one (a stall of the browser's upload cannot be made from here)."""
    said = "no byte of the request body arrived for 60 s; the request was dropped (send it again)"
    ctx, page = await new_page(chromium)
    await page.route("**/api/v1/images", lambda route: route.fulfill(
        status=408, content_type="application/json", body=json.dumps({"error": {"code": "body-timeout",
                                                                               "message": said}})))
    await page.goto(f"{cluster.web_url}/")
    name = f"stalled_{uuid.uuid4().hex[:8]}.png"
    await page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": random_png()}])
    await check_stopped(page, name, (said, "choose the file again later"))
    await ctx.close()
