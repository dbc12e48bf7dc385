"""A double-click on a button that asks first ("Delete image", "Revoke") asks once in Debian's
chromium: the second click, while the accepted first one is on its way, is ignored."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.site import csrf, user_page
from tests.browser.test_anonymous_upload import random_png

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]


async def test_a_double_click_asks_once(cluster: Any, chromium: Any) -> None:
    base = cluster.web_url
    _, ctx, page = await user_page(chromium, base, "double click password", "dc")
    token = await csrf(page, base)
    r = await page.request.post(f"{base}/api/v1/images", headers={"X-CSRF-Token": token}, multipart={
        "file": {"name": "twice.png", "mimeType": "image/png", "buffer": random_png()}})
    assert r.status == 201, await r.text()
    slug = (await r.json())["id"]
    r = await page.request.post(f"{base}/settings/keys", form={"csrf_token": token, "label": "twice"})
    assert r.status == 200

    questions: list[str] = []

    async def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        await page.wait_for_timeout(300)  # a person reads it; the second click waits behind it
        await dialog.accept()

    page.on("dialog", accept)
    await page.goto(f"{base}/i/{slug}")
    await page.dblclick("#delete")
    await page.wait_for_url(f"{base}/my")
    await page.wait_for_timeout(500)
    assert questions == ["Delete this image and every file made from it? This cannot be undone."]
    assert (await page.request.get(f"{base}/api/v1/images/{slug}")).status == 404

    questions.clear()
    await page.goto(f"{base}/settings")
    await page.dblclick("tr:has-text('twice') button:has-text('Revoke')")
    await page.wait_for_selector("tr:has-text('twice') >> text=revoked")
    await page.wait_for_timeout(500)
    assert questions == ["Revoke this key? Scripts and tools using it stop working."]

    # a dismissed question leaves the button working: the next click asks again
    questions.clear()
    page.remove_listener("dialog", accept)

    async def dismiss(dialog: Any) -> None:
        questions.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    r = await page.request.post(f"{base}/api/v1/images", headers={"X-CSRF-Token": token}, multipart={
        "file": {"name": "kept.png", "mimeType": "image/png", "buffer": random_png()}})
    kept = (await r.json())["id"]
    await page.goto(f"{base}/i/{kept}")
    await page.click("#delete")
    await page.click("#delete")
    await page.wait_for_timeout(300)
    assert len(questions) == 2 and page.url == f"{base}/i/{kept}"
    await ctx.close()
