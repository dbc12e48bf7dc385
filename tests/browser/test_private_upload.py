"""The upload page's "Private" box in Debian's chromium, CSP on: a signed-in user ticks it and picks a file; the
upload asks for ``visibility=private`` (tus: in ``POST /api/v1/uploads``; without tus-js-client: the multipart
``POST /api/v1/images``), the row says ``private``, and the image is private from its first answer: the API says
so to its owner, its thumbnail is a signed ``p/<salt>/`` link, and a visitor gets 404 for its page. The box
unticked, the next file is public. Before, the page had no way to upload a private image: it was public until
its owner changed it on its own page.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest
import requests
from playwright.async_api import expect

from tests.browser.site import user_page
from tests.browser.test_anonymous_upload import random_png

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

PASSWORD = "private page password 1"
#: a private image's file URL (:func:`pixelfox.storage.keys.private_key`, signed)
PRIVATE_FILE = re.compile(r"/o/p/[0-9a-f]{32}/[^?]+\?.*sig=")


async def status_of(url: str) -> int:
    """The HTTP status of ``GET url`` without the browser's cookies (a visitor's)."""
    return (await asyncio.to_thread(requests.get, url, timeout=10)).status_code


async def pick(page: Any, prefix: str) -> tuple[str, Any]:
    """Pick a new PNG named ``<prefix>_<8 hex>.png``; its name and its row once the row shows a share link."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}.png"
    await page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": random_png()}])
    row = page.locator("#uploads li.upload", has=page.locator(".name", has_text=name))
    await expect(row.locator("a[href*='/i/']")).to_have_count(1, timeout=60_000)
    await expect(row.locator(".state")).to_have_text(re.compile(r"^ready"), timeout=60_000)
    return name, row


async def image_of(page: Any, base: str, row: Any) -> dict[str, Any]:
    """The image the row links to, as its owner (the page's session) gets it from the JSON API."""
    slug = (await row.locator("a[href*='/i/']").get_attribute("href")).rstrip("/").rsplit("/", 1)[-1]
    r = await page.request.get(f"{base}/api/v1/images/{slug}")
    assert r.status == 200, await r.text()
    return dict(await r.json())


@pytest.mark.parametrize("tus", [True, False], ids=["tus", "multipart"])
async def test_the_private_box_makes_the_upload_private(cluster: Any, chromium: Any, tus: bool) -> None:
    base = cluster.web_url
    _, ctx, page = await user_page(chromium, base, PASSWORD, "privpage")
    if not tus:  # a browser without tus-js-client: the page falls back to one multipart POST per file
        await page.route("**/static/vendor/tus*", lambda route: route.abort())
        await page.reload()
    assert await page.get_attribute("#drop", "data-resumable") == "1"
    assert await page.evaluate("Boolean(window.tus)") is tus
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.method} {r.url.split('?')[0]}")
            if r.url.split("?")[0].endswith(("/api/v1/uploads", "/api/v1/images")) else None)

    box = page.locator("#private")
    await expect(box).not_to_be_checked()
    await box.check()
    _, row = await pick(page, "private")
    await expect(row).to_have_class(re.compile(r"\bprivate\b"))
    await expect(row.locator(".name")).to_contain_text("private")
    image = await image_of(page, base, row)
    assert (image["visibility"], image["status"]) == ("private", "ready"), image
    assert PRIVATE_FILE.search(image["thumbnail_url"]), image["thumbnail_url"]
    assert await status_of(image["thumbnail_url"]) == 200  # the signed link opens
    assert await status_of(f"{base}/i/{image['id']}") == 404  # not for visitors
    assert sent == [f"POST {base}/api/v1/uploads" if tus else f"POST {base}/api/v1/images"], sent

    await box.uncheck()
    _, row = await pick(page, "public")
    await expect(row).not_to_have_class(re.compile(r"\bprivate\b"))
    image = await image_of(page, base, row)
    assert image["visibility"] == "public", image
    assert await status_of(f"{base}/i/{image['id']}") == 200
    await ctx.close()


async def test_visitors_have_no_private_box(cluster: Any, chromium: Any) -> None:
    """An anonymous upload cannot be private (nobody could see it): the box is not offered."""
    ctx = await chromium.new_context()
    page = await ctx.new_page()
    await page.goto(f"{cluster.web_url}/")
    await expect(page.locator("#drop")).to_have_count(1)
    await expect(page.locator("#private")).to_have_count(0)
    await ctx.close()
