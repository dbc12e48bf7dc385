"""The site in a real browser (Playwright + Debian's chromium) against the shared running cluster:
register, log out and in, drop three corpus photos on the upload page (progress, then thumbnails),
open an image page, copy the BBCode, create an album, make an image private and check a
logged-out browser cannot see it or fetch its files, log out."""

from __future__ import annotations

import base64
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.browser.site import admin_page, dismiss_first_dialog, log_in, new_page, register
from tests.conftest import CORPUS

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

PHOTOS = [CORPUS / "photos" / n for n in ("samsung_j3_orient6.jpg", "htc_desire_gps_icc.webp", "painting_rgb.png")]
PASSWORD = "browser password 1"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
MIME = {".jpg": "image/jpeg", ".webp": "image/webp", ".png": "image/png"}

DROP_JS = """
async ([files]) => {
  const dt = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
    dt.items.add(new File([bytes], f.name, {type: f.type}));
  }
  const drop = document.getElementById("drop");
  for (const type of ["dragenter", "dragover", "drop"]) {
    drop.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
  }
}
"""

# records, for every upload row added to #uploads, whether it holds a progress bar when added
BARS_JS = """
() => {
  window.pixelfoxTestBars = [];
  new MutationObserver(records => {
    for (const r of records) for (const n of r.addedNodes) {
      if (n instanceof Element && n.matches("li.upload")) window.pixelfoxTestBars.push(!!n.querySelector("progress"));
    }
  }).observe(document.getElementById("uploads"), { childList: true });
}
"""


def _own_bytes(path: Path) -> bytes:
    """The file's bytes; a JPEG gets a unique comment (COM) segment after SOI: the same photo, new bytes."""
    data = path.read_bytes()
    if path.suffix != ".jpg":
        return data
    note = f"pixelfox browser test {uuid.uuid4()}".encode()
    return data[:2] + b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note + data[2:]


async def shot(page: Any, name: str) -> None:
    """Refresh ``docs/screenshots/<name>.png`` when ``PIXELFOX_SCREENSHOTS=1``."""
    if os.environ.get("PIXELFOX_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(DOCS / f"{name}.png"))


async def test_site_in_chromium(cluster: Any, chromium: Any) -> None:
    base = cluster.web_url
    ctx, page = await new_page(chromium, bypass_csp=True)  # for wait_for_function
    await ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    name = f"br_{uuid.uuid4().hex[:10]}"

    # register, log out, log in
    await register(page, base, name, PASSWORD)
    await page.click("header button:has-text('Log out')")
    await page.wait_for_url(f"{base}/")
    await page.goto(f"{base}/login")
    await shot(page, "login")
    await log_in(page, base, name, PASSWORD)

    # drop three photos: a progress bar per file, then thumbnails from the storage origin
    files = [{"name": p.name, "type": MIME[p.suffix], "b64": base64.b64encode(_own_bytes(p)).decode()}
             for p in PHOTOS]
    # whether each upload row comes with a progress bar, seen as it is added: polling from here
    # instead races the uploads, which may all have finished (bars removed) by the time we look
    await page.evaluate(BARS_JS)
    await page.evaluate(DROP_JS, [files])
    await page.wait_for_function("document.querySelectorAll('#uploads li.upload').length === 3")
    assert await page.evaluate("window.pixelfoxTestBars") == [True] * 3  # shown while the server works
    await page.wait_for_function(
        "[...document.querySelectorAll('#uploads li.upload')].every(li => li.querySelector('.state.ok'))"
        " && document.querySelectorAll('#uploads progress').length === 0", timeout=120_000)
    await page.wait_for_function(
        "[...document.querySelectorAll('#uploads img.thumb')].every(i => i.src.startsWith('http')"
        " && i.complete && i.naturalWidth > 0)", timeout=150_000)  # still-processing files are polled
    states = await page.locator("#uploads .state").all_inner_texts()
    assert states == ["ready"] * 3, states
    await shot(page, "upload")

    # open an image page, copy the BBCode
    # the JPEG, whose bytes are this test's own: going private must retire its public URLs (bytes shared
    # with another public image - other tests upload the same corpus photo - rightly stay served)
    link = page.locator("#uploads li.upload", has=page.locator(".name", has_text=PHOTOS[0].name)).locator("a").first
    image_url = await link.get_attribute("href")
    assert image_url and "/i/" in image_url
    slug = image_url.rsplit("/", 1)[1]
    await page.goto(image_url)
    await page.wait_for_selector("picture img")
    await page.wait_for_function("document.querySelector('picture img').naturalWidth > 0")
    await shot(page, "image")
    bbcode_button = page.locator("label.code", has_text="BBCode").locator("button.copy")
    # "Copied" shows for 2 s only: record the button's texts as they change rather than poll for it
    await bbcode_button.evaluate("b => { window.pixelfoxTestTexts = []; new MutationObserver("
                                 "() => window.pixelfoxTestTexts.push(b.textContent)).observe(b, {childList: true}); }")
    await bbcode_button.click()
    await page.wait_for_function("window.pixelfoxTestTexts.includes('Copied')")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("[url=") and "[img]" in copied and slug in copied, copied

    # an album with this image
    await page.goto(f"{base}/albums")
    await page.fill("#new-album input[name=title]", "Holiday")
    await page.click("#new-album button[type=submit]")
    await page.wait_for_url(re.compile(r".*/a/[A-Za-z0-9_-]+$"))
    album_url = page.url
    await page.click(f"button.add-image[data-slug='{slug}']")
    await page.wait_for_url(album_url)
    assert await page.locator(f".album a[href='/i/{slug}']").count() == 1
    await shot(page, "album")

    # make it private: the page shows it, file URLs are signed
    await page.goto(image_url)
    public_src = await page.get_attribute("picture img", "src")
    await page.select_option("#visibility", "private")
    await page.click("#save")
    await page.wait_for_selector("[data-visibility=private]")
    private_src = await page.get_attribute("picture img", "src")
    assert private_src and "sig=" in private_src and private_src != public_src

    # a logged-out browser sees nothing of it
    anon, apage = await new_page(chromium)
    resp = await apage.goto(image_url)
    assert resp is not None and resp.status == 404
    resp = await apage.goto(album_url)
    assert resp is not None and resp.status == 200
    assert await apage.locator(f"a[href='/i/{slug}']").count() == 0
    r = await anon.request.get(private_src.split("?", 1)[0])
    assert r.status == 403
    assert public_src is not None
    r = await anon.request.get(public_src)
    assert r.status == 404
    await anon.close()

    # deleting asks first: a dismissed question deletes nothing; accepted, /my says the image is gone
    questions = dismiss_first_dialog(page)
    await page.goto(image_url)
    await page.click("#delete")
    await page.wait_for_timeout(500)
    assert page.url == image_url and questions == ["Delete this image and every file made from it? "
                                                   "This cannot be undone."]
    await page.click("#delete")
    await page.wait_for_url(f"{base}/my")
    assert await page.inner_text("#notice") == "Image deleted."
    await page.reload()
    assert await page.locator("#notice").count() == 0  # once
    assert (await page.request.get(image_url)).status == 404

    # settings and log out
    await page.goto(f"{base}/settings")
    await shot(page, "settings")
    await page.click("header button:has-text('Log out')")
    await page.wait_for_url(f"{base}/")
    await page.goto(f"{base}/my")
    assert "/login" in page.url
    await ctx.close()

    # an admin sees the cluster: every node healthy, queue depth, storage use
    _, actx, apage = await admin_page(cluster, chromium, PASSWORD)
    await apage.click("header a:has-text('Admin')")
    await apage.wait_for_selector("#nodes tbody tr")
    health = await apage.locator("#nodes tbody td.ok, #nodes tbody td.bad").all_inner_texts()
    assert health and set(health) == {"healthy"}, health
    assert (await apage.inner_text("#queue-depth")).isdigit()
    await shot(apage, "admin")
    await actx.close()
