"""The image page's copy fields (share link, BBCode, Markdown...) in Debian's chromium show underscores.

The fields are 13.6 px monospace (DejaVu Sans Mono on Debian): its underscore is drawn below the
font's descent, and with ``line-height: normal`` the input's inner box ends at that descent, so
chromium cut the underscore off at device scale 1 (``my_photo`` read ``my photo``). Each field is
drawn twice, holding underscores and holding as many spaces: the underscores must show as a line of
changed pixels inside the field.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from PIL import Image, ImageChops

from tests.browser.site import new_page
from tests.e2e.test_download import upload

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

UNDERSCORES = "_" * 24


async def test_copy_fields_show_underscores(cluster: Any, chromium: Any) -> None:
    image = await asyncio.to_thread(upload, cluster, "my_photo_name.jpg")
    ctx, page = await new_page(chromium, device_scale_factor=1)
    await page.goto(f"{cluster.web_url}/i/{image['id']}")
    fields = page.locator(".code input")
    count = await fields.count()
    assert count >= 3, count  # share link, BBCode, Markdown at least
    font = await fields.first.evaluate("e => getComputedStyle(e).fontFamily + ' ' + getComputedStyle(e).fontSize")
    assert "monospace" in font and font.endswith("13.6px"), font
    for i in range(count):
        field = fields.nth(i)
        drawn: list[Image.Image] = []
        for text in (UNDERSCORES, " " * len(UNDERSCORES)):
            await field.evaluate("(e, v) => { e.value = v; e.scrollLeft = 0; }", text)
            drawn.append(Image.open(io.BytesIO(await field.screenshot(animations="disabled"))).convert("L"))
        diff = ImageChops.difference(*drawn).point(lambda v: 255 if v > 40 else 0)
        width, height = diff.size
        widest = max(sum(1 for x in range(width) if diff.getpixel((x, y))) for y in range(height))
        # 24 underscores are ~190 px of ink in one row; none of it used to show (the row was clipped)
        assert widest >= 100, (i, widest, font, await field.evaluate("e => getComputedStyle(e).lineHeight"))
    await ctx.close()
