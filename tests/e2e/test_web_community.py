"""Issue 5 against the shared running cluster: private images and signed URLs, IDOR, oEmbed,
albums, the JSON API, abuse reports, API keys, password change, admin pages, deletion."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from PIL import Image

from tests.e2e.test_web import PASSWORD, PHOTO, Browser, _until_ready, _user

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def csrf_header(b: Browser) -> dict[str, str]:
    _, html, _ = await b.get("/")
    m = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert m, html
    return {"X-CSRF-Token": m.group(1)}


async def api(b: Browser, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
              ) -> tuple[int, Any]:
    h = b._headers(headers)
    if body is not None:
        h["Content-Type"] = "application/json"
    async with b.http.request(method, b.base + path, data=None if body is None else json.dumps(body),
                              headers=h, allow_redirects=False) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, Any, bytes]:
    async with http.get(url) as r:
        return r.status, r.headers, await r.read()


async def new_user_with_image(http: aiohttp.ClientSession, base: str) -> tuple[Browser, dict[str, str], dict[str, Any]]:
    b = Browser(http, base)
    await b.register(_user())
    hdr = await csrf_header(b)
    status, body, _ = await b.post("/api/v1/images", _unique_upload_form(), hdr)
    assert status == 201, body
    return b, hdr, await _until_ready(b, json.loads(body))


@functools.cache
def _half_photo() -> bytes:
    """The test photo at half its width and height (1288 x 966), its EXIF kept (camera, exposure, orientation 6):
    a quarter of the pixels for each of the dozen uploads these tests wait for."""
    with Image.open(PHOTO) as im:
        exif = im.info["exif"]
        half = im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    half.save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def _unique_photo() -> bytes:
    """The test photo (:func:`_half_photo`) with a unique JPEG comment (COM) segment after SOI: other tests in
    the session upload the same photo, and content-addressed files shared with another image are (rightly)
    kept when one goes private, so these tests need bytes of their own."""
    raw = _half_photo()
    note = f"pixelfox test {uuid.uuid4()}".encode()
    return raw[:2] + b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note + raw[2:]


def _unique_upload_form(data: bytes | None = None) -> aiohttp.FormData:
    """A form with ``data`` (else :func:`_unique_photo`) as its ``file``."""
    form = aiohttp.FormData()
    form.add_field("file", data or _unique_photo(), filename=PHOTO.name, content_type="image/jpeg")
    return form


async def test_private_image_rekeys_signs_and_hides(cluster: Any, http: aiohttp.ClientSession) -> None:
    owner, hdr, image = await new_user_with_image(http, cluster.web_url)
    slug = image["id"]
    public_urls = [v["url"] for v in image["variants"]]
    assert [(await fetch(http, u))[0] for u in public_urls] == [200] * len(public_urls)

    # oEmbed discovery and endpoint while public
    status, page, _ = await owner.get(f"/i/{slug}")
    assert 'type="application/json+oembed"' in page and 'property="og:image"' in page
    assert "SM-J327T1" in page and "1/2801 s" in page  # EXIF summary of the original...
    assert "GPSInfo" not in page and "Latitude" not in page  # ...never its location
    page_url = f"{cluster.web_url}/i/{slug}"
    status, emb = await api(Browser(http, cluster.web_url), "GET", f"/oembed?url={quote(page_url)}&format=json")
    assert status == 200 and emb["type"] == "photo" and emb["version"] == "1.0", emb
    assert emb["width"] > 0 and emb["url"] in public_urls
    status, small = await api(Browser(http, cluster.web_url), "GET",
                              f"/oembed?url={quote(page_url)}&maxwidth=300")
    assert status == 200 and small["width"] <= 300
    # which bound was meant? (the first was taken, silently)
    status, said = await api(Browser(http, cluster.web_url), "GET",
                             f"/oembed?url={quote(page_url)}&maxwidth=300&maxwidth=2000")
    assert status == 400 and said["error"]["message"] == (
        "maxwidth was sent more than once in the query string: send it once"), said

    # go private: new keys, old public URLs die, new URLs need a signature
    status, priv = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"visibility": "private", "title": "secret"},
                             hdr)
    assert status == 200, priv
    assert priv["visibility"] == "private" and priv["title"] == "secret"
    for u in public_urls:
        assert (await fetch(http, u))[0] == 404, u
    signed = [v["url"] for v in priv["variants"]]
    assert all("/o/p/" in u and "sig=" in u for u in signed)
    status, headers, data = await fetch(http, signed[0])
    assert status == 200 and data
    assert headers["Cache-Control"] == "private, no-store"
    unsigned = signed[0].split("?", 1)[0]
    assert (await fetch(http, unsigned))[0] == 403
    assert (await fetch(http, signed[0][:-3] + "AAA"))[0] == 403
    expired = re.sub(r"exp=\d+", "exp=1000000000", signed[0])
    assert (await fetch(http, expired))[0] == 403

    # the owner's page has no OG image, no oEmbed link; everyone else gets 404 / 401
    status, page, _ = await owner.get(f"/i/{slug}")
    assert status == 200 and 'property="og:image"' not in page and "json+oembed" not in page
    anon = Browser(http, cluster.web_url)
    assert (await anon.get(f"/i/{slug}"))[0] == 404
    assert (await api(anon, "GET", f"/api/v1/images/{slug}"))[0] == 404
    # oEmbed: a private image answers exactly like an id that never existed
    private_answer = await api(anon, "GET", f"/oembed?url={quote(page_url)}")
    unknown_answer = await api(anon, "GET", f"/oembed?url={quote(cluster.web_url + '/i/NoSuchImage0')}")
    assert private_answer == unknown_answer == (404, {"error": {"code": "not-found",
                                                               "message": "no public image at this URL"}})
    other = Browser(http, cluster.web_url)
    await other.register(_user())
    ohdr = await csrf_header(other)
    assert (await api(other, "GET", f"/api/v1/images/{slug}"))[0] == 404
    assert (await api(other, "PATCH", f"/api/v1/images/{slug}", {"title": "x"}, ohdr))[0] == 404
    assert (await api(other, "DELETE", f"/api/v1/images/{slug}", None, ohdr))[0] == 404
    assert (await api(other, "PATCH", "/api/v1/albums/nope", {"add_images": [slug]}, ohdr))[0] == 404

    # albums: the private image is listed for the owner only
    status, album = await api(owner, "POST", "/api/v1/albums", {"title": "Trip"}, hdr)
    assert status == 201, album
    # one image both added and removed: which was meant? (it ended up removed, with a 200)
    status, said = await api(owner, "PATCH", f"/api/v1/albums/{album['id']}",
                             {"add_images": [slug], "remove_images": [slug]}, hdr)
    assert status == 400 and said["error"]["message"] == (  # in its own words: no "body: Value error, " first
        f"image {slug} is in both add_images and remove_images: add or remove it"), said
    status, said = await api(owner, "PATCH", f"/api/v1/albums/{album['id']}",
                             {"add_images": ["a{b}"], "remove_images": ["a{b}"]}, hdr)
    assert status == 400 and said["error"]["message"].startswith("image a{b} is in both"), said
    status, album = await api(owner, "PATCH", f"/api/v1/albums/{album['id']}", {"add_images": [slug], "cover": slug},
                              hdr)
    assert status == 200 and album["image_count"] == 1 and album["cover"] == slug, album
    status, seen = await api(anon, "GET", f"/api/v1/albums/{album['id']}")
    assert status == 200 and seen["image_count"] == 0 and seen["images"] == [] and seen["cover_url"] == ""
    status, html, _ = await anon.get(f"/a/{album['id']}")
    assert status == 200 and slug not in html
    status, other_album = await api(other, "POST", "/api/v1/albums", {"title": "Mine"}, ohdr)
    assert (await api(other, "PATCH", f"/api/v1/albums/{other_album['id']}", {"add_images": [slug]}, ohdr))[0] == 404

    # back to public: content-addressed URLs again, unsigned
    status, pub = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"visibility": "public"}, hdr)
    assert status == 200 and pub["visibility"] == "public"
    assert sorted(v["url"] for v in pub["variants"]) == sorted(public_urls)
    assert [(await fetch(http, u))[0] for u in public_urls] == [200] * len(public_urls)
    for u in signed:
        assert (await fetch(http, u))[0] == 404
    # download: the upload with its metadata removed unless the owner keeps metadata, then the original
    status, _, headers = await owner.get(f"/i/{slug}/download")
    clean = next(v for v in pub["variants"] if v["name"] == "original")
    assert status == 302 and headers["Location"].startswith(clean["url"] + "?") and "?" not in clean["url"]
    assert "download=" in headers["Location"]  # signed with the file name: an attachment (tests/e2e/test_download.py)
    assert clean["format"] == "jpeg" and (clean["width"], clean["height"]) == (pub["width"], pub["height"])
    assert pub["original_url"] and headers["Location"] != pub["original_url"]
    status, kept = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"keep_metadata": True}, hdr)
    assert status == 200 and kept["keep_metadata"] is True
    status, _, headers = await anon.get(f"/i/{slug}/original")
    assert status == 302 and headers["Location"] == kept["original_url"]
    status, _, headers = await anon.get(f"/i/{slug}/download")
    assert status == 302 and headers["Location"].partition("?")[0] == kept["original_url"].partition("?")[0]
    status, seen = await api(anon, "GET", f"/api/v1/images/{slug}")
    assert status == 200 and seen["original_url"] == kept["original_url"]
    await api(owner, "PATCH", f"/api/v1/images/{slug}", {"keep_metadata": False}, hdr)
    status, seen = await api(anon, "GET", f"/api/v1/images/{slug}")
    assert status == 200 and seen["original_url"] == clean["url"]  # the read model follows the change

    status, listed = await api(owner, "GET", "/api/v1/images?limit=5")
    assert status == 200 and any(i["id"] == slug for i in listed["images"])


async def test_delete_removes_rows_and_files(cluster: Any, http: aiohttp.ClientSession) -> None:
    owner, _hdr, image = await new_user_with_image(http, cluster.web_url)
    # someone else's image of the same bytes shares the content-addressed public objects
    _other, _ohdr, twin = await new_user_with_image(http, cluster.web_url)
    slug = image["id"]
    token = (await csrf_header(owner))["X-CSRF-Token"]
    status, _, headers = await owner.post(f"/i/{slug}/edit", {"csrf_token": token, "visibility": "private"})
    assert status == 303
    _, priv = await api(owner, "GET", f"/api/v1/images/{slug}")
    keys = [u.split("/o/", 1)[1].split("?", 1)[0] for u in [v["url"] for v in priv["variants"]]]
    files = {str(p) for p in cluster.storage_files()}
    assert all(any(f.endswith(k) for f in files) for k in keys)
    status, _, headers = await owner.post(f"/i/{slug}/delete", {"csrf_token": token})
    assert status == 303, headers
    files = {str(p) for p in cluster.storage_files()}
    assert not any(f.endswith(k) for f in files for k in keys)
    assert (await owner.get(f"/i/{slug}"))[0] == 404
    assert (await api(owner, "GET", f"/api/v1/images/{slug}"))[0] == 404
    for v in priv["variants"]:
        assert (await fetch(http, v["url"]))[0] == 404
    # the twin's public files were never deleted (still referenced)
    assert [(await fetch(http, v["url"]))[0] for v in twin["variants"]] == [200] * len(twin["variants"])


async def test_reports_keys_password_and_admin(cluster: Any, http: aiohttp.ClientSession) -> None:
    owner, _hdr, image = await new_user_with_image(http, cluster.web_url)
    reporter = Browser(http, cluster.web_url)
    await reporter.register(_user())
    status, page, _ = await reporter.get(f"/i/{image['id']}")
    assert status == 200 and f'href="/i/{image["id"]}/report"' in page
    assert f'action="/i/{image["id"]}/report"' not in page  # the form is on a page of its own
    token = await reporter.csrf(f"/i/{image['id']}/report")
    # a reason over 1000 characters is refused as an empty one is (it was cut to 1000 and taken)
    status, said, _ = await reporter.post(f"/i/{image['id']}/report", {"csrf_token": token, "reason": "x" * 1001})
    assert status == 400 and "give a reason of 1-1000 characters" in said, (status, said[:500])
    status, _, headers = await reporter.post(f"/i/{image['id']}/report", {"csrf_token": token, "reason": "spam"})
    assert status == 303 and headers["Location"] == f"/i/{image['id']}/report?sent=1"
    status, thanks, _ = await reporter.get(headers["Location"])
    assert status == 200 and 'id="report-sent"' in thanks and 'id="report-form"' not in thanks

    admin_name = _user()
    r = cluster.pixelfox("users", "create", admin_name, "--admin", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    admin = Browser(http, cluster.web_url)
    await admin.login(admin_name)
    status, html, _ = await admin.get("/admin")
    assert status == 200 and 'id="nodes"' in html and "storage" in html and 'id="queue-depth"' in html
    assert (await owner.get("/admin"))[0] == 403
    status, html, _ = await admin.get("/admin/users")
    assert status == 200 and admin_name in html
    status, html, _ = await admin.get("/admin/images")
    assert status == 200 and f'href="/i/{image["id"]}"' in html
    assert (await owner.get("/admin/images"))[0] == 403
    status, html, _ = await admin.get("/admin/reports")
    assert status == 200 and image["id"] in html and "spam" in html
    rid = re.search(r'data-report="([^"]+)"[^\n]*\n[^\n]*' + re.escape(image["id"]), html)
    assert rid, html
    token = await admin.csrf("/admin/reports")
    # an action that is none of the form's buttons is refused (it was taken as "resolve", with no word)
    status, said, _ = await admin.post(f"/admin/reports/{rid.group(1)}", {"csrf_token": token, "action": "bogus"})
    assert status == 400 and "unknown report action &#39;bogus&#39;: resolve or delete" in said, said[-800:]
    status, html, _ = await admin.get("/admin/reports")
    assert rid.group(1) in html  # still open
    # a field given twice is refused (the last one was taken: this deleted the image)
    status, said, _ = await admin.post(f"/admin/reports/{rid.group(1)}",
                                       [("csrf_token", token), ("action", "resolve"), ("action", "delete")])
    assert status == 400 and "the form gives &#39;action&#39; more than once" in said, said[-800:]
    status, html, _ = await admin.get("/admin/reports")
    assert rid.group(1) in html and (await admin.get(f"/i/{image['id']}"))[0] == 200
    status, _, _ = await admin.post(f"/admin/reports/{rid.group(1)}", {"csrf_token": token, "action": "resolve"})
    assert status == 303
    status, html, _ = await admin.get("/admin/reports")
    assert rid.group(1) not in html

    # API keys: create, use, list, revoke
    token = await owner.csrf("/settings")
    # a label over 100 characters is refused, not cut there without a word; no key is made
    status, page, _ = await owner.post("/settings/keys", {"csrf_token": token, "label": "L" * 101})
    assert status == 400 and "Label longer than 100 characters." in page and "pfx_" not in page, page[-800:]
    status, _, headers = await owner.post("/settings/keys", {"csrf_token": token, "label": "script"})
    assert status == 303 and headers["Location"] == "/settings"  # post/redirect/get: a reload makes no 2nd key
    status, html, _ = await owner.get("/settings")
    assert status == 200
    status, again, _ = await owner.get("/settings")  # shown once
    assert status == 200 and 'id="new-key"' not in again and again.count('<td class="wrap">script<') == 1
    key = re.search(r'id="new-key"|value="(pfx_[^"]+)"', html)
    key_value = re.search(r'value="(pfx_[^"]+)"', html)
    assert key and key_value, html
    bearer = {"Authorization": f"Bearer {key_value.group(1)}"}
    async with http.get(f"{cluster.web_url}/api/v1/images", headers=bearer) as resp:
        assert resp.status == 200
    key_id = re.search(r'data-key-id="([^"]+)"><td class="wrap">script<', html)
    assert key_id, html
    status, _, _ = await owner.post(f"/settings/keys/{key_id.group(1)}/revoke", {"csrf_token": token})
    assert status == 303
    async with http.get(f"{cluster.web_url}/api/v1/images", headers=bearer) as resp:
        assert resp.status == 401

    # password change ends the other session, keeps this one
    name = _user()
    a, b = Browser(http, cluster.web_url), Browser(http, cluster.web_url)
    await a.register(name)
    await b.login(name)
    assert await a.me() == 200 and await b.me() == 200
    token = await a.csrf("/settings")
    form = {"csrf_token": token, "old_password": "wrong password", "new_password": "new pass 1234",
            "new_password2": "new pass 1234"}
    status, _, _ = await a.post("/settings/password", form)
    assert status == 400
    form["old_password"] = PASSWORD
    status, _, _ = await a.post("/settings/password", form)
    assert status == 303
    assert await a.me() == 200
    assert await b.me() == 401


def _unique_png() -> bytes:
    """A real image no other test uploads (random pixels), so its objects are its own."""
    im = Image.frombytes("RGB", (64, 48), os.urandom(64 * 48 * 3))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


async def test_reprocessed_private_image_stays_private(cluster: Any, http: aiohttp.ClientSession) -> None:
    import asyncio

    b = Browser(http, cluster.web_url)
    await b.register(_user())
    hdr = await csrf_header(b)
    form = aiohttp.FormData()
    form.add_field("file", _unique_png(), filename="noise.png", content_type="image/png")
    status, body, _ = await b.post("/api/v1/images", form, hdr)
    assert status == 201, body
    image = await _until_ready(b, json.loads(body))
    sha = image["sha256"]
    status, priv = await api(b, "PATCH", f"/api/v1/images/{image['id']}", {"visibility": "private"}, hdr)
    assert status == 200 and all("/o/p/" in v["url"] for v in priv["variants"])

    def public_variant_files() -> list[str]:
        return [str(p) for p in cluster.storage_files() if f"/v/{sha[:2]}/{sha[2:4]}/{sha}/" in str(p)
                and "/p/" not in str(p).split("/data/", 1)[-1]]

    assert public_variant_files() == []
    r = cluster.pixelfox("reprocess", image["id"])
    assert r.returncode == 0, r.stderr
    for _ in range(240):  # until the job has left the queue (the hook runs before the ack)
        jobs = cluster.pixelfox("jobs", "--json", "--state", "queued", "--state", "running", "--state", "delayed")
        if image["id"] not in jobs.stdout:
            break
        await asyncio.sleep(0.5)
    for _ in range(60):  # the read model gets the re-keyed image from the after-processing hook
        status, after = await api(b, "GET", f"/api/v1/images/{image['id']}")
        if status == 200 and after["variants"] and all("/o/p/" in v["url"] for v in after["variants"]):
            break
        await asyncio.sleep(0.5)
    assert status == 200 and after["variants"] and all("/o/p/" in v["url"] for v in after["variants"]), after
    assert public_variant_files() == []  # the re-run wrote its variants under the private prefix
    assert [(await fetch(http, v["url"]))[0] for v in after["variants"]] == [200] * len(after["variants"])


async def test_racing_visibility_changes_are_serialised_and_delete_leaves_nothing(
        cluster: Any, http: aiohttp.ClientSession) -> None:
    import asyncio

    owner, hdr, image = await new_user_with_image(http, cluster.web_url)
    slug, sha = image["id"], image["sha256"]
    flips = [{"visibility": "private" if i % 2 == 0 else "public"} for i in range(8)]
    answers = await asyncio.gather(*(api(owner, "PATCH", f"/api/v1/images/{slug}", f, hdr) for f in flips))
    statuses = [s for s, _ in answers]
    assert set(statuses) <= {200, 409}, answers  # never a 503: one change at a time, the others are told
    assert all("in progress" in b["error"]["message"] for s, b in answers if s == 409)
    status, gone = await api(owner, "DELETE", f"/api/v1/images/{slug}", None, hdr)
    assert status == 200 and gone["deleted"] is True
    assert [str(p) for p in cluster.storage_files() if sha in str(p) and not p.name.endswith(".meta")] == []


async def test_patch_is_a_json_merge_patch(cluster: Any, http: aiohttp.ClientSession) -> None:
    """RFC 7396: a left-out field stays, null clears a text field, null for a field without an
    empty value (visibility, keep_metadata, album title) is a 400 naming it."""
    owner, hdr, image = await new_user_with_image(http, cluster.web_url)
    slug = image["id"]
    status, titled = await api(owner, "PATCH", f"/api/v1/images/{slug}",
                               {"title": "  Harbour  ", "description": "at dusk"}, hdr)
    assert status == 200 and (titled["title"], titled["description"]) == ("Harbour", "at dusk"), titled
    status, cleared = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"title": None}, hdr)
    assert status == 200 and (cleared["title"], cleared["description"]) == ("", "at dusk"), cleared
    for field in ("visibility", "keep_metadata"):
        status, answer = await api(owner, "PATCH", f"/api/v1/images/{slug}", {field: None}, hdr)
        assert status == 400 and answer["error"]["message"] == f"{field} cannot be null; leave it out to keep it"
    status, album = await api(owner, "POST", "/api/v1/albums", {"title": "Trip", "description": "summer"}, hdr)
    assert status == 201, album
    status, answer = await api(owner, "PATCH", f"/api/v1/albums/{album['id']}", {"title": None}, hdr)
    assert status == 400 and "title cannot be null" in answer["error"]["message"], answer
    status, album = await api(owner, "PATCH", f"/api/v1/albums/{album['id']}", {"description": None}, hdr)
    assert status == 200 and (album["title"], album["description"]) == ("Trip", ""), album
    status, body, _ = await owner.post("/api/v1/images", _unique_upload_form(), hdr)
    assert status == 201, body
    second = json.loads(body)["id"]
    status, album = await api(owner, "PATCH", f"/api/v1/albums/{album['id']}",
                              {"add_images": [slug, second], "cover": second}, hdr)
    assert status == 200 and album["cover"] == second, album
    # the album's og:image is the cover's display JPEG with its size, as on an image page (it was the
    # 200 px WebP thumbnail)
    status, page, _ = await owner.get(f"/a/{album['id']}")
    og = re.search(r'<meta property="og:image" content="([^"]+)">\s*<meta property="og:image:width" '
                   r'content="(\d+)">\s*<meta property="og:image:height" content="(\d+)">', page)
    assert status == 200 and og, page
    status, cover = await api(owner, "GET", f"/api/v1/images/{second}")
    shown = next(v for v in cover["variants"] if v["url"] == og.group(1))
    assert (shown["format"], shown["width"], shown["height"]) == ("jpeg", int(og.group(2)), int(og.group(3)))
    assert shown["name"] != "thumb" and 'content="image/jpeg"' in page
    status, album = await api(owner, "PATCH", f"/api/v1/albums/{album['id']}", {"cover": None}, hdr)
    # no chosen cover: the album shows its default, the first image
    assert status == 200 and album["cover"] != second and album["image_count"] == 2, album


async def test_control_characters_in_stored_text_are_refused(cluster: Any, http: aiohttp.ClientSession,
                                                             tmp_path: Path) -> None:
    """NUL and other control characters in titles, descriptions and reasons are a 400 naming the
    field and the code point (PostgreSQL cannot store NUL at all: that was a 500); a file name
    carrying them is stored without them."""
    owner, hdr, image = await new_user_with_image(http, cluster.web_url)
    slug = image["id"]
    for path, body, field in [
        ("/api/v1/albums", {"title": "Trip\x00"}, "album title"),
        ("/api/v1/albums", {"title": "Trip", "description": "bell \x07"}, "description"),
    ]:
        status, answer = await api(owner, "POST", path, body, hdr)
        assert status == 400 and answer["error"]["message"].startswith(f"{field} contains a control character"), answer
    status, answer = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"title": "a\x1bb"}, hdr)
    assert status == 400 and "(U+001B)" in answer["error"]["message"], answer
    status, ok = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"title": "Two\tcols?",
                                                                      "description": "line one\nline two"}, hdr)
    assert status == 400 and "title contains a control character (U+0009)" in ok["error"]["message"], ok
    status, ok = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"description": "line one\n\tline two"}, hdr)
    assert status == 200 and ok["description"] == "line one\n\tline two", ok
    # the page's edit form is where people paste: a tab or line break in its title field becomes a
    # space (the whole edit used to be lost to a 400 page)
    token = await owner.csrf(f"/i/{slug}")
    status, _, _ = await owner.post(f"/i/{slug}/edit", {"csrf_token": token, "title": "Two\tcols\r\nhere",
                                                         "description": "kept\nas is"})
    assert status == 303
    status, ok = await api(owner, "GET", f"/api/v1/images/{slug}")
    assert (ok["title"], ok["description"]) == ("Two cols here", "kept\nas is"), ok

    import grpc

    from pixelfox.client.uploader import upload_file
    from pixelfox.grpcx.auth import api_key_metadata
    from pixelfox.v1 import manager_pb2_grpc

    raw, note = PHOTO.read_bytes(), f"pixelfox test {uuid.uuid4()}".encode()  # new bytes: no dedup
    unique = tmp_path / "unique.jpg"
    unique.write_bytes(raw[:2] + b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note + raw[2:])
    async with grpc.aio.insecure_channel(cluster.manager_address) as ch:  # browsers cannot send such a name
        receipt = await upload_file(manager_pb2_grpc.ManagerServiceStub(ch), api_key_metadata(cluster.admin_api_key),
                                    unique, filename="bad\x01name\x7f.jpg")
    img = receipt.image
    assert img.filename == "badname.jpg"


async def test_textareas_at_their_limit_with_line_breaks_are_saved(cluster: Any, http: aiohttp.ClientSession) -> None:
    """A browser sends a textarea's line breaks as CRLF while its ``maxlength`` counts each as one
    character: a description typed up to 2,000 characters with line breaks was a 400 ("longer than
    2000 characters"), losing the whole edit (its title too), and the same for an album's
    description and a report's reason (1,000). They are saved, with LF line breaks."""
    owner, hdr, image = await new_user_with_image(http, cluster.web_url)
    slug = image["id"]
    typed = "line\r\n" * 10 + "b" * 1950  # 2,000 characters as the browser counts them, 2,010 sent
    token = await owner.csrf(f"/i/{slug}")
    status, page, _ = await owner.post(f"/i/{slug}/edit", {"csrf_token": token, "title": "Renamed",
                                                            "description": typed, "visibility": "public"})
    assert status == 303, page[:500]
    status, got = await api(owner, "GET", f"/api/v1/images/{slug}")
    assert got["title"] == "Renamed" and got["description"] == "line\n" * 10 + "b" * 1950, got
    assert len(got["description"]) == 2000
    # one character more is still refused
    status, page, _ = await owner.post(f"/i/{slug}/edit", {"csrf_token": token, "description": typed + "b"})
    assert status == 400 and "description longer than 2000 characters" in page, page[:500]

    status, album = await api(owner, "POST", "/api/v1/albums", {"title": "Trip"}, hdr)
    assert status == 201, album
    token = await owner.csrf(f"/a/{album['id']}")
    status, page, _ = await owner.post(f"/a/{album['id']}", {"csrf_token": token, "action": "rename",
                                                              "title": "Trip", "description": typed})
    assert status == 303, page[:500]
    status, got = await api(owner, "GET", f"/api/v1/albums/{album['id']}")
    assert got["description"] == "line\n" * 10 + "b" * 1950, got

    # the JSON API counts line breaks as the form does (it refused 2,010 characters sent before)
    status, got = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"description": typed}, hdr)
    assert status == 200 and got["description"] == "line\n" * 10 + "b" * 1950, got
    status, got = await api(owner, "PATCH", f"/api/v1/albums/{album['id']}", {"description": typed}, hdr)
    assert status == 200 and got["description"] == "line\n" * 10 + "b" * 1950, got
    status, got = await api(owner, "POST", "/api/v1/albums", {"title": "Trip 2", "description": typed}, hdr)
    assert status == 201 and got["description"] == "line\n" * 10 + "b" * 1950, got
    status, got = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"description": typed + "b"}, hdr)
    assert status == 400 and "2000" in got["error"]["message"], got
    # spaces around a title or description are not counted, as the form (and the manager) trims them
    status, got = await api(owner, "PATCH", f"/api/v1/images/{slug}",
                            {"title": "  " + "t" * 255, "description": "d" * 2000 + "   "}, hdr)
    assert status == 200 and (got["title"], got["description"]) == ("t" * 255, "d" * 2000), got
    status, got = await api(owner, "POST", "/api/v1/albums", {"title": "   "}, hdr)
    assert status == 400 and got["error"]["message"] == "title: String should have at least 1 character", got

    reporter = Browser(http, cluster.web_url)
    await reporter.register(_user())
    token = await reporter.csrf(f"/i/{slug}/report")
    reason = "why\r\n" * 5 + "r" * 980  # 1,000 as counted, 1,005 sent
    status, page, headers = await reporter.post(f"/i/{slug}/report", {"csrf_token": token, "reason": reason})
    assert status == 303 and headers["Location"] == f"/i/{slug}/report?sent=1", page[:500]


async def test_bidi_controls_in_stored_text_are_refused(cluster: Any, http: aiohttp.ClientSession) -> None:
    """A title kept bidirectional controls, so it could read as other text: "abc<U+202E>gnp.exe" shows as
    "abcexe.png". Image and album titles and descriptions (and an upload's title, given before its bytes)
    with one are now a 400 naming the field and the code point, as a control character is; right-to-left
    text itself is kept."""
    owner, hdr, image = await new_user_with_image(http, cluster.web_url)
    slug = image["id"]
    status, answer = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"title": "abc\u202egnp.exe"}, hdr)
    assert (status, answer["error"]) == (400, {"code": "bad-request", "message": (
        "title contains a bidirectional control character (U+202E)")}), answer
    for method, path, body, said in [
        ("PATCH", f"/api/v1/images/{slug}", {"description": "one\n\u2066two"}, "description"),
        ("POST", "/api/v1/albums", {"title": "\u2067Trip"}, "album title"),
        ("POST", "/api/v1/albums", {"title": "Trip", "description": "a\u200fb"}, "description"),
        ("POST", "/api/v1/uploads", {"filename": "a.png", "size": 1000, "title": "x\u061c"}, "title"),
    ]:
        status, answer = await api(owner, method, path, body, hdr)
        assert status == 400, (path, body, answer)
        assert answer["error"]["message"].startswith(f"{said} contains a bidirectional control character (U+"), answer
    status, answer = await api(owner, "GET", "/api/v1/albums")
    assert status == 200 and answer["albums"] == [], answer  # nothing was made
    rtl = "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 2024"
    status, ok = await api(owner, "PATCH", f"/api/v1/images/{slug}", {"title": rtl}, hdr)
    assert (status, ok["title"]) == (200, rtl), ok


async def test_a_new_album_whose_image_is_refused_is_not_kept(cluster: Any, http: aiohttp.ClientSession) -> None:
    """``POST /albums`` with an ``image`` that cannot go in (someone else's, or no such image) answers the
    refusal and keeps no album (it was made first and stayed: one more per retry)."""
    _, _, theirs = await new_user_with_image(http, cluster.web_url)
    me = Browser(http, cluster.web_url)
    await me.register(_user())
    hdr = await csrf_header(me)
    token = await me.csrf("/albums")
    for image, want in ((theirs["id"], 403), ("doesnotexist", 404)):
        status, page, _ = await me.post("/albums", {"csrf_token": token, "title": "orphan", "image": image})
        assert status == want, (image, status, page[-500:])
    status, listed = await api(me, "GET", "/api/v1/albums", None, hdr)
    assert status == 200 and listed["albums"] == [], listed
    status, _, _ = await me.post("/albums", {"csrf_token": token, "title": "kept"})
    assert status == 303
    status, listed = await api(me, "GET", "/api/v1/albums", None, hdr)
    assert [a["title"] for a in listed["albums"]] == ["kept"], listed


async def test_album_page_renames_and_pages_through_images_to_add(cluster: Any, http: aiohttp.ClientSession) -> None:
    """The owner renames an album on its page (a form without a description keeps it) and can add
    any of their images: "Add images" shows 48 at a time with a link to older ones (it used to
    offer only the 48 newest)."""


    owner = Browser(http, cluster.web_url)
    await owner.register(_user())
    hdr = await csrf_header(owner)
    slugs = []
    for i in range(50):  # newest last
        buf = io.BytesIO()
        Image.new("RGB", (12, 8), (i * 5, 255 - i * 5, (i * 37) % 256)).save(buf, "PNG")
        form = aiohttp.FormData()
        form.add_field("file", buf.getvalue(), filename=f"tile{i}.png", content_type="image/png")
        status, body, _ = await owner.post("/api/v1/images?wait=0", form, hdr)
        assert status == 201, body
        slugs.append(json.loads(body)["id"])
    status, album = await api(owner, "POST", "/api/v1/albums", {"title": "Tiles", "description": "fifty"}, hdr)
    assert status == 201
    url = f"/a/{album['id']}"
    token = await owner.csrf(url)
    status, page, _ = await owner.get(url)
    assert status == 200 and 'name="title" value="Tiles"' in page and ">fifty</textarea>" in page
    offered = re.findall(r'class="small add-image" data-slug="([^"]+)"', page)
    assert offered == slugs[::-1][:48], offered  # the 48 newest
    older = re.search(r'href="(/a/[^"?]+\?before=[^"#]+)#add-images"', page)
    assert older, page
    status, page2, _ = await owner.get(older.group(1))
    assert re.findall(r'class="small add-image" data-slug="([^"]+)"', page2) == slugs[1::-1]
    assert "?before=" not in page2.split('id="add-images"')[1]  # the last page
    status, _, headers = await owner.post(url, {"csrf_token": token, "action": "add", "image": slugs[0]},
                                          {"Referer": cluster.web_url + older.group(1)})
    assert (status, headers["Location"]) == (303, older.group(1) + "#add-images")  # back to that page
    status, _, _ = await owner.post(url, {"csrf_token": token, "action": "rename", "title": "Tiles 2026"})
    assert status == 303
    status, seen = await api(owner, "GET", f"/api/v1/albums/{album['id']}")
    assert (seen["title"], seen["description"], [i["id"] for i in seen["images"]]) == ("Tiles 2026", "fifty",
                                                                                      [slugs[0]])
    status, _, _ = await owner.post(url, {"csrf_token": token, "action": "rename", "title": "Tiles",
                                          "description": ""})
    status, seen = await api(owner, "GET", f"/api/v1/albums/{album['id']}")
    assert (seen["title"], seen["description"]) == ("Tiles", "")


async def test_deleting_an_image_settles_its_open_reports(cluster: Any, http: aiohttp.ClientSession) -> None:
    """A report on an image its owner then deletes leaves the admins' open list (it stayed open,
    pointing at nothing), recorded as image-deleted by the owner."""
    owner, hdr, image = await new_user_with_image(http, cluster.web_url)
    reporter = Browser(http, cluster.web_url)
    token = await reporter.csrf(f"/i/{image['id']}/report")
    reason = f"stale report {uuid.uuid4().hex[:8]}"
    status, _, _ = await reporter.post(f"/i/{image['id']}/report", {"csrf_token": token, "reason": reason})
    assert status == 303
    admin_name = _user()
    r = cluster.pixelfox("users", "create", admin_name, "--admin", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    admin = Browser(http, cluster.web_url)
    await admin.login(admin_name)
    assert reason in (await admin.get("/admin/reports"))[1]
    status, me = await api(owner, "GET", "/api/v1/me")
    status, _ = await api(owner, "DELETE", f"/api/v1/images/{image['id']}", None, hdr)
    assert status == 200
    status, html, _ = await admin.get("/admin/reports")
    assert status == 200 and reason not in html
    status, html, _ = await admin.get("/admin/reports?all=1")
    row = next(line for line in html.split("<tr") if reason in line)
    assert f"image-deleted by {me['name']}</td>" in row, row
