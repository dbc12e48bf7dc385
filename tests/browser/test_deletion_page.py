"""A deletion link opened in Debian's chromium: the confirmation, the "deleted" answer and a second
visit are pages in the site's layout (the confirmation with the image's thumbnail and title), never
bare HTML or raw JSON; a program that does not ask for HTML still gets JSON with the same status."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.site import new_page
from tests.browser.test_anonymous_upload import random_png

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

TITLE = "Sunset over the harbour"


async def _upload(ctx: Any, base: str) -> dict[str, Any]:
    """An anonymous upload through the JSON API (it waits until the image is ready)."""
    fields = {"file": {"name": "sunset.png", "mimeType": "image/png", "buffer": random_png()}, "title": TITLE}
    r = await ctx.request.post(f"{base}/api/v1/images", multipart=fields)
    assert r.status == 201, await r.text()
    body: dict[str, Any] = json.loads(await r.text())
    assert body["deletion_url"] and body["thumbnail_url"], body
    return body


async def test_deletion_link_pages_in_the_site_layout(cluster: Any, chromium: Any) -> None:
    base = cluster.web_url
    ctx, page = await new_page(chromium)
    image = await _upload(ctx, base)
    url = image["deletion_url"]

    r = await ctx.request.get(url)  # a program (Accept */*) gets JSON
    assert r.status == 200 and r.headers["content-type"].startswith("application/json"), await r.text()
    assert json.loads(await r.text())["title"] == TITLE and r.headers["vary"] == "Accept"

    resp = await page.goto(url)
    assert resp is not None and resp.status == 200
    assert await page.locator("header .brand").count() == 1  # base.html
    assert await page.inner_text(".deletion .title") == TITLE
    await page.wait_for_function("document.getElementById('preview').naturalWidth > 0")
    assert await page.get_attribute("#preview", "src") == image["thumbnail_url"]

    await page.click("#delete")
    await page.wait_for_selector("#deleted")
    assert await page.locator("header .brand").count() == 1
    assert image["id"] in await page.inner_text("#deleted")

    resp = await page.goto(url)  # a second visit: the image is gone
    assert resp is not None and resp.status == 404
    assert await page.locator("header .brand").count() == 1
    assert (await resp.header_value("content-type") or "").startswith("text/html")
    assert await resp.header_value("vary") == "Accept" and "{" not in await page.inner_text("main")
    r = await ctx.request.get(url, headers={"Accept": "application/json"})
    assert r.status == 404 and json.loads(await r.text())["error"]["code"] == "not-found"
    await ctx.close()
