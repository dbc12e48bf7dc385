"""Anonymous uploads on the upload page in Debian's chromium: each answer's deletion link is shown
(the only way for an anonymous uploader to delete the image), the recent uploads' share and
deletion links are kept in localStorage so a reload still lists them, and "Clear this list"
forgets them."""

from __future__ import annotations

import io
import json
import random
import uuid
from typing import Any

import pytest
from PIL import Image
from playwright.async_api import expect

from tests.browser.site import new_page

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

RECENT = "pixelfox-recent-uploads"  # web/static/upload.js


def random_png() -> bytes:
    """A small PNG of random pixels: new bytes for every call."""
    im = Image.frombytes("RGB", (64, 48), random.randbytes(64 * 48 * 3))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


async def test_anonymous_upload_keeps_its_deletion_link(cluster: Any, chromium: Any) -> None:
    base = cluster.web_url
    ctx, page = await new_page(chromium)  # CSP enforced
    await page.goto(f"{base}/")
    assert await page.evaluate(f"localStorage.getItem({RECENT!r})") is None
    name = f"anon_{uuid.uuid4().hex[:8]}.png"
    await page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": random_png()}])

    row = page.locator("#uploads li.upload").first
    deletion = row.locator(".deletion input")
    await expect(row.locator(".deletion")).to_contain_text("keep this link to delete the image later",
                                                           timeout=90_000)
    share = await row.locator(".links input").first.input_value()
    delete_url = await deletion.input_value()
    assert share.startswith(f"{base}/i/") and delete_url.startswith(f"{base}/api/v1/delete/"), (share, delete_url)
    assert "/anonymous/" in delete_url
    await expect(row.locator("button", has_text="Copy deletion link")).to_be_visible()
    kept = json.loads(await page.evaluate(f"localStorage.getItem({RECENT!r})"))
    assert [(k["name"], k["url"], k["deletion_url"]) for k in kept] == [(name, share, delete_url)]

    # a reload still lists it, with both links
    await page.reload()
    again = page.locator("#uploads li.upload")
    await expect(again).to_have_count(1)
    await expect(again.locator(".name")).to_have_text(name)
    assert await again.locator(".links input").first.input_value() == share
    assert await again.locator(".deletion input").input_value() == delete_url
    await expect(page.locator("#recent")).to_be_visible()

    # the link is the real one: it answers its confirmation page
    status = await page.evaluate("async (u) => (await fetch(u)).status", delete_url)
    assert status == 200

    # "Clear this list" forgets the links, also after a reload
    await page.click("#recent-clear")
    await expect(page.locator("#uploads li.upload")).to_have_count(0)
    assert await page.evaluate(f"localStorage.getItem({RECENT!r})") is None
    await page.reload()
    await expect(page.locator("#uploads li.upload")).to_have_count(0)
    await expect(page.locator("#recent")).to_be_hidden()
    await ctx.close()


async def test_an_image_deleted_by_its_link_leaves_the_recent_list(cluster: Any, chromium: Any) -> None:
    """After "Delete for ever" on a deletion link's page, the upload page still listed the image as
    "uploaded earlier", its share and deletion links now 404s. The "Image deleted" page drops it from
    the list (web/static/forget.js); going back to the upload page shows only what is left."""
    base = cluster.web_url
    ctx, page = await new_page(chromium)
    await page.goto(f"{base}/")
    names = [f"anon_{uuid.uuid4().hex[:8]}.png" for _ in range(2)]
    for name in names:
        await page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": random_png()}])
    rows = page.locator("#uploads li.upload")
    await expect(rows.locator(".deletion")).to_have_count(2, timeout=90_000)
    kept = json.loads(await page.evaluate(f"localStorage.getItem({RECENT!r})"))
    doomed = next(k for k in kept if k["name"] == names[0])
    await page.goto(doomed["deletion_url"])
    await page.click("#delete")
    await expect(page.locator("#deleted")).to_be_visible()
    kept = json.loads(await page.evaluate(f"localStorage.getItem({RECENT!r})"))
    assert [k["name"] for k in kept] == [names[1]], kept
    await page.go_back()  # the confirmation page
    await page.go_back()  # the upload page: from the back/forward cache or loaded again
    await expect(page.locator("#uploads li.upload")).to_have_count(1)
    await expect(page.locator("#uploads li.upload .name")).to_have_text(names[1])
    await page.goto(f"{base}/")
    await expect(page.locator("#uploads li.upload")).to_have_count(1)
    await ctx.close()
