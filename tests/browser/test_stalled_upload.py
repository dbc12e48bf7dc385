"""The upload page when the upload node it sends to freezes (SIGSTOP), in Debian's chromium, CSP on.

A frozen node keeps its connections open and reads nothing: no error, no answer, so tus-js-client waited
for ever (the row's bar stood still, with no word). A web node with ``upload_stall_s`` = 3 s (the upload
page's ``data-stall-ms``) serves the page here: the first PATCH goes through, the upload node is SIGSTOPped
before the second reaches it, and the row must say "the upload node stopped answering: retrying…" within
the stall time (plus a little), try the same node once more, then renew its ticket away from that node
(``POST /api/v1/uploads/<id>/ticket`` with ``exclude_address``) and finish the same upload on the other
upload node from the committed offset. The frozen node gets SIGCONT in any case.
"""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image
from playwright.async_api import expect

from tests.browser.site import new_page, register
from tests.browser.test_resumable_upload import MIB, PASSWORD, STATES_JS

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

STALL_S = 3
NOTE = "the upload node stopped answering: retrying…"
SIDE = 720  # px: a PNG of random pixels this wide and high is about 1.5 MiB


def noisy_png(path: Path) -> Path:
    """A ``SIDE`` x ``SIDE`` RGB PNG of random pixels (incompressible: about 1.5 MiB)."""
    Image.frombytes("RGB", (SIDE, SIDE), random.Random(11).randbytes(SIDE * SIDE * 3)).save(path, "PNG")
    return path


def upload_node_serving(cluster: Any, url: str) -> Any:
    """The launcher's child (``upload1``...) whose tus endpoint ``url`` is on (by its HTTP port)."""
    port = str(urlsplit(url).port)
    return next(c for c in cluster.local.children
                if c.name.startswith("upload") and c.env and c.env.get("PIXELFOX_HTTP__PORT") == port)


@pytest.fixture
def stall_web(cluster: Any) -> Iterator[str]:
    """The base URL of a web node of the session's cluster whose upload page waits ``STALL_S`` for progress
    (``PIXELFOX_UPLOAD_STALL_S``); stopped and forgotten afterwards (a dead child fails ``wait_ready``)."""
    local = cluster.local
    local.role_env["webstall"] = {**local.role_env.get("web", {}), "PIXELFOX_UPLOAD_STALL_S": str(STALL_S)}
    url = cluster.start_web("webstall")
    try:
        yield url
    finally:
        local.terminate("webstall")
        local.children.remove(local.child("webstall"))
        local.web_urls.remove(url)
        local.web_names.pop(url, None)
        del local.role_env["webstall"]


async def test_an_upload_whose_node_freezes_goes_on_on_the_other_node(cluster: Any, chromium: Any, stall_web: str,
                                                                       tmp_path: Path) -> None:
    base = stall_web
    ctx, page = await new_page(chromium)  # CSP enforced
    frozen: list[Any] = []
    try:
        # two PATCHes (1 MiB, then the rest), and few pixels: processing stays within its time limit under load
        photo = noisy_png(tmp_path / f"stall_{uuid.uuid4().hex[:8]}.png")
        size = photo.stat().st_size
        assert MIB < size < 2 * MIB
        await register(page, base, f"stall_{uuid.uuid4().hex[:10]}", PASSWORD)
        assert await page.get_attribute("#drop", "data-stall-ms") == str(STALL_S * 1000)

        patches: list[tuple[str, str]] = []  # (URL, Upload-Offset) of every PATCH the page sent
        stopped_at: list[float] = []

        async def freeze_before_second_patch(route: Any) -> None:
            req = route.request
            if req.method == "PATCH":
                patches.append((req.url, req.headers.get("upload-offset", "")))
                if len(patches) == 2 and not frozen:  # the node took the first MiB; now it stops reading
                    frozen.append(upload_node_serving(cluster, req.url))
                    frozen[0].proc.send_signal(signal.SIGSTOP)
                    stopped_at.append(time.monotonic())
            await route.continue_()

        tickets: list[tuple[str, str]] = []  # (URL, body) of the page's POSTs for tickets
        page.on("request", lambda r: tickets.append((r.url, r.post_data or "")) if r.method == "POST" and (
            r.url.endswith("/api/v1/uploads") or r.url.endswith("/ticket")) else None)
        await page.route("**/tus/**", freeze_before_second_patch)
        await page.evaluate(STATES_JS)
        await page.set_input_files("#file", str(photo))
        state = page.locator("#uploads li.upload .state").first
        await expect(state).to_have_attribute("data-retrying", "1", timeout=60_000)
        assert frozen and time.monotonic() - stopped_at[0] < STALL_S + 4
        await expect(state).to_have_text(NOTE)
        await expect(state).to_have_text("ready", timeout=150_000)

        seen = await page.evaluate("window.pixelfoxTestStates")
        assert [s for s in seen if "stopped answering" in s] == [f"{NOTE} [retrying 1]", f"{NOTE} [retrying 2]"], seen
        first_url, moved_url = patches[0][0], patches[-1][0]
        upload_id = first_url.rsplit("/", 1)[1]
        other = upload_node_serving(cluster, moved_url)
        assert other.name != frozen[0].name and upload_node_serving(cluster, first_url) is frozen[0], patches
        assert patches[:2] == [(first_url, "0"), (first_url, str(MIB))], patches
        after = [offset for url, offset in patches if url == moved_url]
        assert after[0] == str(MIB), patches  # went on from the committed offset, on the other node
        # one upload: made once, its ticket renewed once away from the frozen node's gRPC address
        frozen_address = f"{cluster.local.host}:{frozen[0].env['PIXELFOX_GRPC__PORT']}"
        assert tickets == [(f"{base}/api/v1/uploads", tickets[0][1]),
                           (f"{base}/api/v1/uploads/{upload_id}/ticket",
                            json.dumps({"exclude_address": frozen_address}, separators=(",", ":")))], tickets

        done = await (await page.request.get(f"{base}/api/v1/uploads/{upload_id}")).json()
        assert (done["status"], done["offset"], done["size"]) == ("complete", size, size), done
        image = done["image"]
        assert (image["width"], image["height"], image["status"]) == (SIDE, SIDE, "ready"), image
        assert await page.locator("#uploads li.upload a").first.get_attribute("href") == image["url"]
    finally:
        if frozen:
            frozen[0].proc.send_signal(signal.SIGCONT)
            await cluster.local.wait_ready(60)
        await ctx.close()
