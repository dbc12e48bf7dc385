"""The image page's Download button in a real browser (Playwright + Debian's chromium): a click
starts a download named as the file was uploaded, with the bytes the route serves. The storage
node used to send no ``Content-Disposition``, so chromium only navigated to the image."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.browser.site import new_page
from tests.e2e.test_download import follow_download, upload

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.mark.parametrize("name", ["Été à Zürich.jpg", 'my "best" shot.jpg'])
async def test_download_button_saves_the_uploaded_file(cluster: Any, chromium: Any, tmp_path: Path,
                                                        name: str) -> None:
    image = await asyncio.to_thread(upload, cluster, name)
    ctx, page = await new_page(chromium, accept_downloads=True)
    await page.goto(f"{cluster.web_url}/i/{image['id']}")
    async with page.expect_download() as info:
        await page.click("#download")
    download = await info.value
    assert download.suggested_filename == name.replace('"', "")
    saved = tmp_path / "saved"
    await download.save_as(saved)
    _, served = await asyncio.to_thread(follow_download, cluster, image["id"])
    assert served.status_code == 200 and saved.read_bytes() == served.content
    inline = await asyncio.to_thread(requests.get, f"{cluster.web_url}/i/{image['id']}/original", timeout=30)
    assert inline.content == served.content  # the same file, the route's own
    await ctx.close()
