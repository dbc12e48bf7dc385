"""``/oembed`` against the shared running cluster: an animated image answers its animated WebP
(corpus case B09), and ``maxwidth``/``maxheight`` that are not a positive whole number are a 400."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from PIL import Image

from tests.e2e.test_web import Browser, _until_ready, _user
from tests.e2e.test_web_community import api, csrf_header, fetch

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def _upload(cluster: Any, http: aiohttp.ClientSession, path: Path) -> dict[str, Any]:
    """``path`` uploaded by a new user, once ready (the API's image JSON)."""
    b = Browser(http, cluster.web_url)
    await b.register(_user())
    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=path.name, content_type="image/gif")
    status, body, _ = await b.post("/api/v1/images", form, await csrf_header(b))
    assert status == 201, body
    return await _until_ready(b, json.loads(body), timeout_s=180)


async def test_oembed_of_an_animated_gif_is_its_animated_webp(cluster: Any, corpus: Path,
                                                               http: aiohttp.ClientSession) -> None:
    image = await _upload(cluster, http, corpus / "photos" / "rotating_squares_30f.gif")
    anon = Browser(http, cluster.web_url)
    page_url = f"{cluster.web_url}/i/{image['id']}"
    status, emb = await api(anon, "GET", f"/oembed?url={quote(page_url)}")
    assert status == 200 and emb["type"] == "photo", emb
    # B09: the answer keeps every frame and its timing, as the share page's animated WebP does
    status, _, data = await fetch(http, emb["url"])
    assert status == 200 and data[:4] == b"RIFF" and data[8:12] == b"WEBP", emb["url"]
    with Image.open(io.BytesIO(data)) as im:
        assert (emb["width"], emb["height"], im.info["loop"]) == (*im.size, 0)
        durations = []
        for n in range(im.n_frames):
            im.seek(n)
            im.load()  # a WebP frame's duration is read with its pixels
            durations.append(im.info["duration"])
    assert durations == [30] * 30
    status, page, _ = await anon.get(f"/i/{image['id']}")
    assert status == 200 and emb["url"].replace("&", "&amp;") in page


async def test_oembed_bounds_must_be_positive_whole_numbers(cluster: Any, corpus: Path,
                                                             http: aiohttp.ClientSession) -> None:
    image = await _upload(cluster, http, corpus / "photos" / "rotating_squares_30f.gif")
    anon = Browser(http, cluster.web_url)
    url = quote(f"{cluster.web_url}/i/{image['id']}")
    for name, value in (("maxwidth", "abc"), ("maxwidth", "-5"), ("maxheight", "0"), ("maxwidth", "1.5")):
        status, body = await api(anon, "GET", f"/oembed?url={url}&{name}={quote(value)}")
        assert (status, body["error"]["code"]) == (400, "bad-request"), (name, value, body)
        assert body["error"]["message"] == f"{name} must be a positive whole number of pixels, not {value!r}"
    # a whole number, only too long: said so (it said "must be a positive whole number", which it is)
    status, body = await api(anon, "GET", f"/oembed?url={url}&maxwidth={'9' * 20}")
    assert (status, body["error"]["message"]) == (400, "maxwidth must be at most 18 digits, not 20"), body
    # smaller than every rendition: 404 (oEmbed 1.0 §2.3.4), naming the smallest width there is
    status, body = await api(anon, "GET", f"/oembed?url={url}&maxwidth=1")
    found = re.fullmatch(r"no rendition fits maxwidth=1; the smallest available is (\d+) x (\d+) pixels "
                         r"\(width x height\)", body["error"]["message"])
    assert status == 404 and found, body
    # a height bound too small is named as one (it said "the smallest available width")
    status, body = await api(anon, "GET", f"/oembed?url={url}&maxwidth=5000&maxheight=1")
    assert (status, body["error"]["message"]) == (404, (
        f"no rendition fits maxwidth=5000 and maxheight=1; the smallest available is {found.group(1)} x "
        f"{found.group(2)} pixels (width x height)")), body
    status, emb = await api(anon, "GET", f"/oembed?url={url}&maxwidth={found.group(1)}")
    assert status == 200 and emb["width"] == int(found.group(1)) <= image["width"], emb
    # larger than any rendition: the largest one (1000000 was a 400 saying it is not a positive number)
    status, largest = await api(anon, "GET", f"/oembed?url={url}")
    for big in ("1000000", "2147483648"):
        status, emb = await api(anon, "GET", f"/oembed?url={url}&maxwidth={big}&maxheight={big}")
        assert (status, emb["width"], emb["height"]) == (200, largest["width"], largest["height"]), (big, emb)
