"""A file the server refuses, on the upload page in Debian's chromium: the row shows a refused state
(``li.refused``, a plain box where the preview was, the server's message as an alert), never a
broken-image preview.

The page draws a preview of every ``image/*`` file it is given. A text file named ``.jpg`` or a HEIC
file cannot be drawn by chromium, and the row used to keep that broken ``<img>`` next to the
error; a truncated JPEG's half-grey preview stayed too, as if the image were there. Corpus cases
``edge/text_renamed.jpg``, ``edge/heif_unsupported.heic`` and ``edge/truncated.jpg``
(``reject-with-error`` in ``MANIFEST.tsv``), anonymously (one multipart POST each) and signed in (tus).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.site import new_page, user_page

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

REFUSED = {  # corpus file: what the row says
    "edge/text_renamed.jpg": "not an image (text)",
    "edge/heif_unsupported.heic": "unsupported format: HEIC",
    "edge/truncated.jpg": "truncated image: JPEG data ends before the end-of-image marker",
}
PASSWORD = "refused password 1"
# every <img> of the upload rows is settled and none is broken (a src that failed to load)
NONE_BROKEN_JS = """
() => [...document.querySelectorAll("#uploads img")]
  .every(i => i.complete && (!i.getAttribute("src") || i.naturalWidth > 0))
"""


async def check_refused(page: Any, corpus: Path) -> None:
    """Every row of :data:`REFUSED` ends refused: no <img> left, a marked box, the server's message
    shown as an alert."""
    rows = page.locator("#uploads li.upload")
    await expect(rows).to_have_count(len(REFUSED))
    for name, said in REFUSED.items():
        row = rows.filter(has=page.locator(".name", has_text=Path(name).name))
        await expect(row).to_have_class(re.compile(r"\brefused\b"), timeout=120_000)
        state = row.locator(".state")
        await expect(state).to_be_visible()
        await expect(state).to_have_attribute("role", "alert")
        await expect(state).to_have_class("state bad")
        await expect(state).to_have_text(said)
        assert await row.locator("img").count() == 0, name
        await expect(row.locator(".thumb")).to_have_text("\u2715")
        await expect(row.locator(".thumb")).to_be_visible()
    assert await page.evaluate(NONE_BROKEN_JS)


async def test_a_refused_file_shows_no_broken_preview(cluster: Any, chromium: Any, corpus: Path) -> None:
    base = cluster.web_url
    ctx, page = await new_page(chromium)  # CSP enforced
    await page.goto(f"{base}/")

    # the server's answers are held back: meanwhile no preview is a broken image either (the text
    # file's and the HEIC's previews fail to load and are dropped; the truncated JPEG's half draws)
    release = asyncio.Event()
    held: list[str] = []

    async def hold(route: Any) -> None:
        held.append(route.request.url)
        await release.wait()
        await route.continue_()

    await page.route("**/api/v1/images", hold)
    await page.set_input_files("#file", [str(corpus / n) for n in REFUSED])
    await page.wait_for_function(f"document.querySelectorAll('#uploads li.upload').length === {len(REFUSED)}")
    await page.wait_for_function(NONE_BROKEN_JS)
    no_preview = page.locator("#uploads li.upload", has=page.locator(".name", has_text="text_renamed.jpg"))
    await expect(no_preview.locator("img.thumb")).not_to_have_attribute("src", re.compile("."))
    await expect(page.locator("#uploads .state.bad")).to_have_count(0)  # nothing answered yet
    release.set()
    await check_refused(page, corpus)
    assert len(held) == len(REFUSED), held
    await ctx.close()

    # signed in, the same files go by tus to an upload node, which refuses them at the end
    _, ctx, page = await user_page(chromium, base, PASSWORD, "refused")
    assert await page.get_attribute("#drop", "data-resumable") == "1"
    await page.set_input_files("#file", [str(corpus / n) for n in REFUSED])
    await check_refused(page, corpus)
    await ctx.close()
