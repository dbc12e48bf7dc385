"""The upload page's resumable uploads (tus-js-client from npm) in Debian's chromium, CSP on.

A signed-in user picks a 3-4 MB photo. The page asks ``POST /api/v1/uploads`` for a ticket and
sends the file with tus to an upload node, 1 MiB per PATCH. The test lets the first PATCH
through and fails every later one (the connection drops), checks that the row says so while
tus-js-client retries by itself ("connection lost: retrying (1 of 5)…", it used to show nothing but a
still bar) and keeps its preview when it gives up (the file was not refused), reloads the page, picks the same
file again and checks that the upload continues at the committed offset (the first PATCH
after the reload starts at 1 MiB, not 0; its stored ticket, made to end within a minute, is
renewed with ``POST /api/v1/uploads/<id>/ticket``, not replaced by a new upload), ends
``ready``, and that the stored image has the photo's size. The page's own
Content-Security-Policy stays on, so its ``connect-src`` must name the upload nodes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.async_api import expect

from tests.browser.site import new_page, register, user_page

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

PASSWORD = "resumable password 1"
MIB = 1024 * 1024
# records every text an upload row's .state shows, as it changes: a retry's note lasts a second or less
STATES_JS = """
() => {
  window.pixelfoxTestStates = [];
  new MutationObserver(() => {
    for (const s of document.querySelectorAll("#uploads .state")) {
      const seen = s.textContent + (s.dataset.retrying ? " [retrying " + s.dataset.retrying + "]" : "");
      if (window.pixelfoxTestStates.at(-1) !== seen) window.pixelfoxTestStates.push(seen);
    }
  }).observe(document.getElementById("uploads"), { childList: true, subtree: true, characterData: true,
                                                   attributes: true });
}
"""


def noisy_jpeg(path: Path, size: tuple[int, int] = (2000, 1500)) -> Path:
    """A JPEG of random pixels (about 3-4 MB at quality 95): several 1 MiB PATCHes."""
    rnd = random.Random(7)
    im = Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    path.write_bytes(buf.getvalue())
    return path


async def test_upload_resumes_after_reload(cluster: Any, chromium: Any, tmp_path: Path) -> None:
    base = cluster.web_url
    photo = noisy_jpeg(tmp_path / f"resume_{uuid.uuid4().hex[:8]}.jpg")
    size = photo.stat().st_size
    assert size > 3 * MIB

    ctx, page = await new_page(chromium)  # CSP enforced
    await ctx.clock.install()  # the page's timers run in real time, except where the test moves them ahead
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    name = f"tus_{uuid.uuid4().hex[:10]}"
    await register(page, base, name, PASSWORD)
    assert await page.get_attribute("#drop", "data-resumable") == "1"

    # first attempt: one PATCH gets through, then the connection "drops" for every later PATCH
    patches: list[dict[str, str]] = []

    async def drop_after_first(route: Any) -> None:
        req = route.request
        if req.method == "PATCH":
            patches.append(dict(req.headers))
            if len(patches) > 1:
                await route.abort("connectionreset")
                return
        await route.continue_()

    await page.route("**/tus/**", drop_after_first)
    await page.evaluate(STATES_JS)
    await page.set_input_files("#file", str(photo))
    state = page.locator("#uploads li.upload .state").first
    # tus-js-client retries a dropped PATCH after 0, 1, 3, 5 and 10 s before it gives up: the page's
    # clock is moved ahead so that those 19 s pass at once (the requests themselves take real time)
    deadline = time.monotonic() + 90
    while "choose the file again to continue" not in await state.inner_text():
        assert time.monotonic() < deadline, await state.inner_text()
        await page.clock.fast_forward(1000)
        await asyncio.sleep(0.1)
    assert patches and patches[0].get("upload-offset") == "0", patches[:1]
    # each of tus-js-client's 5 retries was said on the row, then it gave up; the file was not refused
    seen = await page.evaluate("window.pixelfoxTestStates")
    notes = [f"connection lost: retrying ({n} of 5)… [retrying {n}]" for n in range(1, 6)]
    assert [s for s in seen if "retrying" in s] == notes, seen
    assert seen[-1] == "upload stopped - choose the file again to continue", seen
    row = page.locator("#uploads li.upload").first
    await expect(row).not_to_have_class(re.compile(r"\brefused\b"))
    assert await row.locator("img.thumb").evaluate("i => i.complete && i.naturalWidth > 0")  # its preview stays
    assert len(patches) >= 2  # the second PATCH (and its retries) were cut
    stored = await page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('pixelfox-upload:'))")
    assert len(stored) == 1, stored
    ticket = json.loads(await page.evaluate(f"localStorage.getItem({json.dumps(stored[0])})"))
    progress = await page.request.get(f"{base}/api/v1/uploads/{ticket['id']}")
    assert progress.status == 200
    committed = (await progress.json())["offset"]
    assert committed == MIB, await progress.json()

    # reload; another file with the same name, size, type and modification time (one byte differs
    # in its first 256 KiB) is a new upload from offset 0, never glued onto the partial one
    await page.unroute("**/tus/**")
    after: list[dict[str, str]] = []
    page.on("request", lambda r: after.append(dict(r.headers)) if r.method == "PATCH" and "/tus/" in r.url else None)
    await page.reload()
    # the page says a pick of the same file goes on (it showed nothing of the stopped upload)
    await expect(page.locator("#resume-hint")).to_have_text(
        f"Unfinished upload of {photo.name}: choose the same file again to continue where it stopped.")
    twin = tmp_path / "twin" / photo.name
    twin.parent.mkdir()
    data = bytearray(photo.read_bytes())
    at = next(i for i in range(100_000, len(data)) if data[i] < 0xF0 and data[i - 1] != 0xFF)
    data[at] ^= 0x01  # inside the entropy-coded data, making no marker: still a valid JPEG
    twin.write_bytes(bytes(data))
    st = photo.stat()
    os.utime(twin, ns=(st.st_atime_ns, st.st_mtime_ns))
    await page.set_input_files("#file", str(twin))
    twin_state = page.locator("#uploads li.upload .state").first
    await expect(twin_state).not_to_have_text(re.compile(r"waiting|uploading 0 %"), timeout=90_000)
    await expect(twin_state).not_to_contain_text("resumed")
    assert after and after[0].get("upload-offset") == "0", after[:1]
    keys = await page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('pixelfox-upload:'))")
    assert stored[0] in keys  # the first file's ticket is still there
    await expect(twin_state).not_to_have_text(re.compile(r"uploading|processing"), timeout=150_000)
    assert await twin_state.inner_text() == "ready"  # a whole upload of its own

    # the same file again, its ticket under a minute from its end: the page renews it (POST .../ticket)
    # instead of making a new upload, and the upload goes on from the committed offset
    await page.reload()
    after.clear()
    await page.evaluate("k => { const t = JSON.parse(localStorage.getItem(k)); "
                        "t.expires_at = new Date(Date.now() + 30000).toISOString(); "
                        "localStorage.setItem(k, JSON.stringify(t)); }", stored[0])
    renewals: list[str] = []
    page.on("request", lambda r: renewals.append(r.url) if r.method == "POST" and r.url.endswith("/ticket") else None)
    await page.set_input_files("#file", str(photo))
    state = page.locator("#uploads li.upload .state").first
    await expect(state).to_have_text("ready", timeout=150_000)
    assert after and after[0].get("upload-offset") == str(MIB), after[:1]
    assert sum(1 for h in after if h.get("upload-offset") == "0") == 0  # nothing sent twice from the start
    assert renewals == [f"{base}/api/v1/uploads/{ticket['id']}/ticket"], renewals
    assert await page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('pixelfox-upload:')).length") == 0
    await expect(page.locator("#resume-hint")).to_be_hidden()  # nothing left to continue

    done = await (await page.request.get(f"{base}/api/v1/uploads/{ticket['id']}")).json()
    assert done["offset"] == done["size"] == size, done
    image = done["image"]
    assert (image["width"], image["height"]) == (2000, 1500) and image["status"] == "ready", image
    link = page.locator("#uploads li.upload a").first
    assert await link.get_attribute("href") == image["url"]
    assert not csp_errors, csp_errors

    # the same bytes a third time, after they were stored: the page says it is the existing image
    await page.set_input_files("#file", str(photo))
    again = page.locator("#uploads li.upload .state").first
    await expect(again).to_have_text("ready (already uploaded: your existing image)", timeout=150_000)
    assert await page.locator("#uploads li.upload a").first.get_attribute("href") == image["url"]

    # a ticket left by this user is dropped when another user opens the upload page in this browser
    first_user = await page.get_attribute("#drop", "data-user")
    assert first_user
    await page.evaluate("([k, v]) => localStorage.setItem(k, v)",
                        [f"pixelfox-upload:{first_user}/left/behind", json.dumps(ticket)])
    await page.click("header button:has-text('Log out')")
    await page.wait_for_url(f"{base}/")
    await register(page, base, f"{name}_b", PASSWORD)
    second_user = await page.get_attribute("#drop", "data-user")
    assert second_user and second_user != first_user
    assert await page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('pixelfox-upload:'))") == []
    await ctx.close()


async def test_the_same_file_picked_twice_ends_as_one_image_in_both_rows(cluster: Any, chromium: Any,
                                                                        tmp_path: Path) -> None:
    """Two quick picks of one file share one upload (one stored ticket): whichever row's last PATCH
    lands second used to read the upload while the other was still storing it ("open" at full
    offset) and said "upload failed (HTTP 200)"; both rows now show the one image. The second row
    waits for the first (it sent the same bytes again on the same ticket, and said "resumed" and
    "the server answered HTTP 423: retrying" for an upload it had not started)."""
    photo = noisy_jpeg(tmp_path / f"twice_{uuid.uuid4().hex[:8]}.jpg")
    _, ctx, page = await user_page(chromium, cluster.web_url, PASSWORD, "twice")
    await page.evaluate(STATES_JS)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.method} {r.headers.get('upload-offset', '')}")
            if r.method == "PATCH" or r.url.endswith("/api/v1/uploads") else None)
    await page.set_input_files("#file", str(photo))
    await page.set_input_files("#file", str(photo))
    rows = page.locator("#uploads li.upload")
    await expect(rows).to_have_count(2)
    for i in range(2):
        await expect(rows.nth(i).locator("a").first).to_be_visible(timeout=150_000)
    states = [await rows.nth(i).locator(".state").inner_text() for i in range(2)]
    assert not any("fail" in s for s in states), states
    seen = await page.evaluate("window.pixelfoxTestStates")
    assert "the same file as a row above: its upload's result shows here too" in seen, seen
    assert not [s for s in seen if "resumed" in s or "423" in s], seen
    assert sent.count("POST ") == 1 and sent.count("PATCH 0") == 1, sent  # one upload, its bytes sent once
    hrefs = {await rows.nth(i).locator("a").first.get_attribute("href") for i in range(2)}
    assert len(hrefs) == 1, hrefs  # one image, not two
    listing = await (await page.request.get(f"{cluster.web_url}/api/v1/images")).json()
    assert [im["url"] for im in listing["images"]] == list(hrefs)
    await ctx.close()


async def test_a_signed_in_users_upload_shows_its_deletion_link(cluster: Any, chromium: Any, tmp_path: Path) -> None:
    """A signed-in user's tus upload shows its deletion link, labelled, as an anonymous upload's does (the
    page read it from ``GET /api/v1/uploads/<id>``, which gave none: the row had only the share link), and
    the link deletes the image."""
    base = cluster.web_url
    photo = noisy_jpeg(tmp_path / f"del_{uuid.uuid4().hex[:8]}.jpg", (300, 200))
    _, ctx, page = await user_page(chromium, base, PASSWORD, "del")  # CSP enforced
    assert await page.get_attribute("#drop", "data-resumable") == "1"
    tus: list[str] = []
    page.on("request", lambda r: tus.append(r.method) if "/tus/" in r.url else None)
    await page.set_input_files("#file", str(photo))
    row = page.locator("#uploads li.upload").first
    await expect(row.locator(".deletion")).to_contain_text("keep this link to delete the image later",
                                                           timeout=90_000)
    assert "PATCH" in tus  # the resumable path, not the one-shot POST
    await expect(row.locator("button", has_text="Copy deletion link")).to_be_visible()
    share = await row.locator(".links input").first.input_value()
    delete_url = await row.locator(".deletion input").input_value()
    me = await (await page.request.get(f"{base}/api/v1/me")).json()
    slug = share.rsplit("/", 1)[1]
    assert delete_url.startswith(f"{base}/api/v1/delete/{slug}/{me['id']}/"), (share, delete_url)
    assert await page.evaluate("localStorage.getItem('pixelfox-recent-uploads')") is None  # anonymous only

    await page.goto(delete_url)  # the confirmation page, then its button
    await page.click("#delete")
    await expect(page.locator("body")).to_contain_text(f"Image {slug} was deleted.")
    assert (await page.request.get(f"{base}/api/v1/images/{slug}")).status == 404
    await ctx.close()
