"""Long unbroken text (no spaces) in titles, file names, report reasons and key labels wraps or is cut
with an ellipsis in Debian's chromium: no page grows wider than the window, no grid caption runs
under the next tile."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.site import admin_page, csrf
from tests.browser.test_anonymous_upload import random_png

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

PASSWORD = "long text password 1"
WIDTH = 1280
FILENAME = "holiday_2024_08_17_beach_sunset_with_the_whole_family_IMG_0001_final_edit.png"


async def _upload(page: Any, base: str, token: str, title: str = "") -> str:
    """Upload a random PNG named :data:`FILENAME` through the JSON API; its slug once it is ready."""
    fields: dict[str, Any] = {"file": {"name": FILENAME, "mimeType": "image/png", "buffer": random_png()}}
    if title:
        fields["title"] = title
    r = await page.request.post(f"{base}/api/v1/images", multipart=fields, headers={"X-CSRF-Token": token})
    assert r.status == 201, await r.text()
    slug = str(json.loads(await r.text())["id"])
    for _ in range(240):
        r = await page.request.get(f"{base}/api/v1/images/{slug}")
        if json.loads(await r.text())["status"] == "ready":
            return slug
        await page.wait_for_timeout(500)
    raise AssertionError(f"{slug} did not get ready")


async def _post(page: Any, url: str, token: str, **form: str) -> Any:
    r = await page.request.post(url, form={"csrf_token": token, **form})
    assert r.status == 200, (url, r.status, await r.text())  # after the 303
    return r


async def _fits(page: Any, url: str) -> None:
    await page.goto(url)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"{url} is {width} px wide"
    # no grid caption reaches past its own tile
    past = await page.evaluate("[...document.querySelectorAll('.tile .caption')]"
                               ".filter(c => c.getBoundingClientRect().right > c.closest('.tile')"
                               ".getBoundingClientRect().right + 0.5).length")
    assert past == 0, f"{url}: {past} captions overflow their tile"


async def test_long_text_fits_the_window(cluster: Any, chromium: Any) -> None:
    base = cluster.web_url
    _, ctx, page = await admin_page(cluster, chromium, PASSWORD, "lt", viewport={"width": WIDTH, "height": 800})
    token = await csrf(page, base)

    titled = await _upload(page, base, token, title="T" * 255)
    await _upload(page, base, token)  # untitled: /my shows the long file name
    await _upload(page, base, token)
    album = (await _post(page, f"{base}/albums", token, title="A" * 247)).url
    await _post(page, album, token, action="add", image=titled)
    await _post(page, f"{base}/i/{titled}/report", token, reason="R" * 1000)
    await _post(page, f"{base}/settings/keys", token, label="K" * 100)

    for path in ("/admin/reports", f"/i/{titled}", album.removeprefix(base), "/albums", "/my", "/settings"):
        await _fits(page, base + path)
    await page.goto(f"{base}/admin/reports")
    row = page.locator("tr", has=page.locator("td", has_text="R" * 1000))
    assert await row.count() == 1
    box = await row.locator("button[value=delete]").bounding_box()
    assert box is not None and box["x"] + box["width"] <= WIDTH  # the admin can reach it
    await page.goto(f"{base}/albums")  # the image count stays in sight beside a cut title
    count = page.locator(".tile", has=page.locator(f"a[href='{album.removeprefix(base)}']")).locator(".muted")
    assert await count.inner_text() == "1 image" and await count.is_visible()
    await page.goto(f"{base}/admin/reports")
    # the other cells keep their words whole: the report's date stays on one line
    date = await row.locator("td span.muted.small").bounding_box()
    assert date is not None and date["height"] < 25, date
    await ctx.close()
