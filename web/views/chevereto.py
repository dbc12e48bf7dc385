"""``POST /api/1/upload``: the Chevereto API v1 (also spoken by ImgBB clients), ECOSYSTEM.md §2.

Fields (multipart form, url-encoded form or query string): ``source`` (the file, or its
base64; URLs are refused — fetching them would let callers make the server request any
address; ImgBB's name for it, ``image``, works too), ``key`` or header ``X-API-Key``
(required), ``title``, ``album_id`` (the image is added to that album; an album that does not
exist or is someone else's refuses the upload, 404 or 403, before anything is stored),
``expiration`` (ISO 8601 duration such as ``PT5M`` or ``P3D``, or ImgBB's
plain seconds such as ``600``: the image is deleted that long after upload, see
:mod:`nodes.manager.expiry`), ``visibility`` (ours, as on ``/api/v1/images``: ``public``, the default, or
``private``; anything else is a 400 naming it) and ``format`` = ``json`` (default) | ``txt`` (the direct URL as
text) | ``redirect`` (303 to the viewer page). Each text field comes once (:data:`SINGLE_FIELDS`: a
second one is a 400 naming it). Like ShareX uploads it waits up to
``upload_wait_s`` for processing so thumbnail URLs work at once.

The JSON answer is Chevereto's ``{"status_code": 200, "success": {"message", "code"},
"image": {...}, "status_txt": "OK"}``; ``data`` repeats ``image`` for ImgBB readers. The image's
``deduplicated`` (ours) is true when the caller already had these bytes: the answer is that image,
unchanged (a ``title`` sent along is not applied), and ``success.message`` says so. ``visibility``
(ours) is ``public`` or ``private``; when the existing image is private, its links open only for
the caller, and ``note`` (ours), ``success.message`` and, for ``format=txt``, the header
``Pixelfox-Note`` say so. Errors
are ``{"status_code", "error": {"message", "code"}, "status_txt"}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web

from pixelfox import errors
from pixelfox.client.images import NOTE_HEADER, clean_original, private_duplicate_note, public_status
from pixelfox.schemes import refuse_repeated
from pixelfox.text import printable
from pixelfox.v1 import common_pb2, manager_pb2
from pixelfox.visibility import asked_visibility
from web.bodies import body_slot, caller_key, idle_watch
from web.calls import Metadata, call
from web.deletion import deletion_url
from web.expect import send_continue
from web.expiration import parse_duration
from web.keys import MANAGER, SETTINGS
from web.ratelimit import check_ip, not_counted_if_over_user_limits
from web.views.api import (
    MULTIPART_SLACK,
    TEXT_FIELD_LIMIT,
    _save_part,
    check_user_limits,
    first_bytes,
    form_parts,
    malformed_multipart,
    page_url,
    part_filename,
)

#: success.message of a re-upload of bytes the caller already has (the image's "deduplicated" is true)
DEDUPLICATED = "image already uploaded: the existing image is returned unchanged (its title too)"


SOURCE_FIELDS = ("source", "image")  # Chevereto's name for the file, ImgBB's
#: text fields read as one value: one sent twice (in the query string, in the form, or in both) is a 400
#: naming it, as a repeated ``key`` is; the last one used to be taken, whichever the client meant. A
#: ``key`` in both the query string and the form may be the same key (:func:`early_key`)
SINGLE_FIELDS = ("key", "format", "title", "album_id", "expiration", "visibility")
#: url-encoded bodies read at once per web node (each is held whole, up to ~56 MB; multipart
#: sources stream to disk instead)
_BUFFERED = asyncio.Semaphore(2)


async def _decode_source(text: str, limit: int) -> Path:
    """A base64 source given whole (url-encoded body, query) decoded into a temp file."""
    data, at = memoryview(text.encode("ascii", "replace")), 0

    async def read(n: int) -> bytes:
        nonlocal at
        piece = bytes(data[at:at + n])
        at += len(piece)
        return piece

    return await _decode_stream(read, limit)


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")  # dropped before decoding, as base64.b64decode(validate=False) does
#: the URL-safe alphabet's two letters (RFC 4648 §5: '-' for '+', '_' for '/'), which are never in the standard
#: one: a client that sends URL-safe base64 (JavaScript's and Python's urlsafe encoders) is read the same
_URL_SAFE = bytes.maketrans(b"-_", b"+/")
_DATA_URL = re.compile(rb"^\s*data:[^,]{0,256},", re.IGNORECASE)


_URL_SCHEMES = (b"http://", b"https://", b"ftp://")


class _Base64Sink:
    """Base64 text in, decoded bytes out to ``f``, four characters at a time, bounded: PayloadTooLarge
    past ``most`` bytes of file (or twice that of text), BadRequest when the text is not base64. The
    standard and the URL-safe alphabet are both read, with or without the final padding (RFC 4648)."""

    def __init__(self, f: BinaryIO, most: int, too_large: errors.PixelfoxError) -> None:
        self.f, self.most, self.too_large = f, most, too_large
        self.rest, self.text_bytes, self.file_bytes = b"", 0, 0

    async def feed(self, chunk: bytes) -> None:
        self.text_bytes += len(chunk)
        if self.text_bytes > self.most * 2 + 65536:  # 4/3 of the file: more is padding or junk
            raise self.too_large
        data = self.rest + _NOT_BASE64.sub(b"", chunk.translate(_URL_SAFE))
        cut = len(data) - len(data) % 4
        self.rest = data[cut:]
        if not cut:
            return
        try:
            out = base64.b64decode(data[:cut])
        except (binascii.Error, ValueError):
            raise errors.BadRequest("source is neither a file nor base64") from None
        self.file_bytes += len(out)
        if self.file_bytes > self.most:
            raise self.too_large
        await asyncio.to_thread(self.f.write, out)

    def finish(self) -> None:
        tail = self.rest.rstrip(b"=")
        if len(tail) in (2, 3):  # base64 without its padding (RFC 4648 §3.2; URL-safe encoders often drop it)
            try:
                out = base64.b64decode(tail + b"=" * (4 - len(tail)))
            except (binascii.Error, ValueError):
                raise errors.BadRequest("source is neither a file nor base64") from None
            self.file_bytes += len(out)
            if self.file_bytes > self.most:
                raise self.too_large
            self.f.write(out)  # 1 or 2 bytes
        elif tail:  # one character left over: cut short, or not base64
            raise errors.BadRequest("source is neither a file nor base64")
        if not self.file_bytes:
            raise errors.EmptyFile("empty file")


async def _decode_stream(read: Callable[[int], Awaitable[bytes]], limit: int) -> Path:
    """Decode a base64 source from ``read`` (chunks of text) straight into a temp file, holding one
    chunk at a time. Raises BadRequest (a URL, not base64), EmptyFile, PayloadTooLarge past
    :data:`BASE64_MAX_BYTES` (or ``limit``) bytes of decoded file; the temp file goes on any error.
    A ``data:`` URL prefix (``data:image/png;base64,``) is dropped; one with no ',' is BadRequest."""
    head = b""
    while len(head) < 300 and (chunk := await read(256 * 1024)):  # enough to tell a URL or a data: URL
        head += chunk
    if head.lstrip().lower().startswith(_URL_SCHEMES):
        raise errors.BadRequest("source URLs are not supported; send the file or its base64")
    if head.lstrip()[:5].lower() == b"data:" and not _DATA_URL.match(head):
        # what curl -F "source=data:image/png;base64,..." sends: -F ends a value at ';' ("data:image/png")
        raise errors.BadRequest("source is a data: URL with no ',' before its data (curl -F cuts a value at ';': "
                                "use --form-string, or put the value in double quotes)")
    fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="pixelfox-chv-")
    path, f = Path(name), os.fdopen(fd, "wb")
    try:
        sink = _Base64Sink(f, min(limit, BASE64_MAX_BYTES), _base64_too_large(limit))
        await sink.feed(_DATA_URL.sub(b"", head, count=1))
        while chunk := await read(256 * 1024):
            await sink.feed(chunk)
        sink.finish()
        await asyncio.to_thread(f.close)
        return path
    except BaseException:
        f.close()
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise


#: the largest file a base64 ``source`` may hold, bytes: a url-encoded body is held in memory whole
#: (a multipart base64 part or file field streams to disk), so base64 gets its own bound below
#: ``max_upload_bytes``
BASE64_MAX_BYTES = 32 * 1024 * 1024


def _encoded_limit(limit: int) -> int:
    """Bytes a base64 ``source`` may take when the upload limit is ``limit`` bytes: 4/3 of the file,
    which is at most :data:`BASE64_MAX_BYTES`, plus room for a data: URL prefix."""
    return min(limit, BASE64_MAX_BYTES) * 4 // 3 + 1024


def _base64_too_large(limit: int) -> errors.PayloadTooLarge:
    most = min(limit, BASE64_MAX_BYTES)
    return errors.PayloadTooLarge(f"a base64 source may hold at most {most} bytes; send a larger file as a file "
                                  "(multipart), up to the upload limit")


async def _read_capped(read: Callable[[int], Awaitable[bytes]], cap: int, too_large: errors.PixelfoxError
                       ) -> bytes:
    """Everything ``read`` gives until it returns b""; ``too_large`` is raised past ``cap`` bytes.
    (aiohttp's own readers stop at the app's 1 MiB ``client_max_size``: a base64 photo is larger.)"""
    out = bytearray()
    while chunk := await read(256 * 1024):
        out += chunk
        if len(out) > cap:
            raise too_large
    return bytes(out)


class TextFields:
    """The text fields of an upload by name (``values``), read from the query string and then the form;
    BadRequest naming a :data:`SINGLE_FIELDS` field given more than once."""

    QUERY, FORM = "the query string", "the form"

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self._place: dict[str, str] = {}

    @classmethod
    def of_query(cls, request: web.Request) -> TextFields:
        """The query string's fields (sources left out: :func:`_read_form` takes them), checked before
        the body is read."""
        fields = cls()
        for name, value in request.query.items():
            if name not in SOURCE_FIELDS:
                fields.add(name, value, cls.QUERY)
        return fields

    def check(self, name: str, place: str) -> None:
        """BadRequest if ``name`` may come once and came before (from the query string or the form, ``place``
        now): said before its value is read."""
        if name not in SINGLE_FIELDS or name not in self._place:
            return
        if self._place[name] == place:
            raise errors.BadRequest(f"{name} was sent more than once in {place}: send it once")
        if name != "key":  # a key in both must be the one sent before the body: _upload compares them
            raise errors.BadRequest(f"{name} was sent in both the query string and the form: send it once")

    def add(self, name: str, value: str, place: str) -> None:
        self.check(name, place)
        self._place[name] = place
        self.values[name] = value


async def _read_form(request: web.Request, limit: int, fields: TextFields) -> tuple[dict[str, str], Path | None, str]:
    """Text fields (the query string's ``fields``, then the body's) and the source as a temp file plus its
    file name. Raises BadRequest for a malformed body or a field of :data:`SINGLE_FIELDS` sent twice,
    PayloadTooLarge past ``limit`` bytes."""
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request, limit, fields)
    source: Path | None = None
    async with _BUFFERED:  # a url-encoded body is held whole: a few at a time per web node
        if request.content_type == "application/x-www-form-urlencoded":
            # '+' '/' '=' of the base64 are sent as %2B %2F %3D (about 1 character in 16): allow a quarter more
            body = await _read_capped(request.content.read, _encoded_limit(limit) * 5 // 4 + TEXT_FIELD_LIMIT * 8,
                                      _base64_too_large(limit))
            try:
                form = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
            except (UnicodeDecodeError, ValueError):
                raise errors.BadRequest("malformed application/x-www-form-urlencoded body") from None
            del body
            for k, v in form:
                if k not in SOURCE_FIELDS:
                    fields.add(k, v, fields.FORM)
            given = [v for k, v in form if k in SOURCE_FIELDS]
        else:
            given = [v for k, v in request.query.items() if k in SOURCE_FIELDS]
        if given:  # the last one, as in a multipart body: a later source replaces an earlier one
            source = await _decode_source(given[-1], limit)
    return fields.values, source, "upload"


async def _read_multipart(request: web.Request, limit: int, fields: TextFields
                          ) -> tuple[dict[str, str], Path | None, str]:
    source: Path | None = None
    filename = "upload"
    try:
        async for part in form_parts(request):
            if not isinstance(part, BodyPartReader):
                continue
            if part.name in SOURCE_FIELDS:
                if source is not None:  # a second source replaces the first, name and all
                    await asyncio.to_thread(source.unlink, missing_ok=True)
                    filename = "upload"
                if part.filename:
                    filename = part_filename(part)
                    source = await _save_part(part, limit)
                else:  # base64 text, decoded as it streams in (aiohttp's own read stops at 1 MiB)
                    source = await _decode_stream(part.read_chunk, limit)
            elif part.name:
                fields.check(part.name, fields.FORM)  # before its value is read
                fields.add(part.name, (await first_bytes(part, TEXT_FIELD_LIMIT)).decode("utf-8", "replace"),
                           fields.FORM)
    except BaseException as exc:
        if source is not None:
            await asyncio.to_thread(source.unlink, missing_ok=True)
        if (bad := malformed_multipart(exc)) is not None:
            raise bad from exc
        raise
    return fields.values, source, filename


def _file(url: str, image: common_pb2.Image) -> dict[str, Any]:
    ext = url.rsplit(".", 1)[-1] if "." in url.rsplit("/", 1)[-1] else image.format
    name = url.rsplit("/", 1)[-1]
    return {"filename": name, "name": name.rsplit(".", 1)[0], "extension": ext, "url": url}


def direct_link(request: web.Request, image: common_pb2.Image) -> str:
    """A lasting direct link to the file: the clean original's URL (metadata removed), or - when the
    owner keeps metadata, or it is still processing - the page's ``/original``, which redirects to a
    freshly signed URL (a stored original's own URL is signed and expires) without making it a
    download as ``/download`` does."""
    clean = None if image.keep_metadata or image.visibility == "private" else clean_original(image)
    return clean.url if clean else f"{page_url(request, image)}/original"


def _extension(image: common_pb2.Image) -> str:
    """The detected format's usual extension (``jpg``, ``png``...): never the uploaded name's, which the
    client chose (a PNG sent as ``pic.svg`` said ``svg``, and clients save files by it); the name's
    only when no format is known yet."""
    if image.format:
        return {"jpeg": "jpg"}.get(image.format, image.format)
    _, dot, ext = image.filename.rpartition(".")
    return ext if dot else ""


def chevereto_image(request: web.Request, image: common_pb2.Image, expires_s: int) -> dict[str, Any]:
    """The ``image`` object of a Chevereto v1 answer; ``expires_s`` is the expiration asked for (seconds)."""
    by_name: dict[str, str] = {}
    for v in sorted(image.variants, key=lambda v: v.format != "webp"):  # prefer WebP per size
        by_name.setdefault(v.name, v.url)
    direct = direct_link(request, image)
    medium = by_name.get("medium") or direct
    thumb = image.thumbnail_url or by_name.get("thumb") or medium
    stem, dot, _ = image.filename.rpartition(".")
    return {
        "id_encoded": image.slug, "name": stem if dot and stem else image.filename, "extension": _extension(image),
        "original_filename": image.filename, "title": image.title, "size": image.bytes,
        "width": image.width, "height": image.height, "mime": image.mime, "date_gmt": image.created_at,
        "url": direct, "url_viewer": page_url(request, image), "url_short": page_url(request, image),
        "display_url": medium, "status": public_status(image),
        "image": {**_file(direct, image), "mime": image.mime, "size": image.bytes},
        "thumb": _file(thumb, image), "medium": _file(medium, image),
        "delete_url": deletion_url(request, image), "expiration": expires_s or None,
    }


def chevereto_error(status: int, message: str, code: int | str) -> web.Response:
    return web.json_response({"status_code": status, "error": {"message": message, "code": code},
                              "status_txt": _phrase(status)},
                             status=status)


def _phrase(status: int) -> str:
    """The HTTP reason phrase of ``status`` ("Error" for a code without one), as Chevereto's status_txt."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def not_allowed(request: web.Request) -> web.Response:
    """``GET``/``PUT``/... on the upload endpoint: a 405 in Chevereto's shape. Chevereto takes a ``GET`` with
    ``source`` a URL, which PixelFox never fetches: the message says what to send instead."""
    response = chevereto_error(405, f"{request.method} is not taken here: POST the image as the field source "
                               "(the file, or its base64; PixelFox does not fetch URLs)", "method-not-allowed")
    response.headers["Allow"] = "POST"
    return response


async def upload(request: web.Request) -> web.StreamResponse:
    """``POST /api/1/upload``; every refusal in Chevereto's error shape (:func:`chevereto_error`), a 429
    with ``Retry-After`` as elsewhere.

    An API key in the header ``X-API-Key`` or the query string (``?key=``) is checked before the
    body is read, with its user's per-user limits (:func:`web.views.api.check_user_limits`): an
    unknown key (401) or a user over a limit (429, or 413 over the quota) costs no upload, and that
    refusal does not count against the address' upload budget
    (:func:`web.ratelimit.not_counted_if_over_user_limits`). A key sent only as a form field is known
    only once the body is read, so such a request is checked then, by ``CreateUpload``, after the
    whole body was received; a form ``key`` other than the one sent before the body, or a key
    repeated before it, is a 400 (:func:`early_key`). A client that
    sent ``Expect: 100-continue`` gets these refusals instead of ``100 Continue`` (:mod:`web.expect`)."""
    try:
        return await _upload(request)
    except errors.PixelfoxError as exc:
        response = chevereto_error(exc.http_status, exc.message, exc.code)
        if isinstance(exc, errors.RateLimited) and exc.retry_after_s:  # as every other 429 of the web node
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response


async def _check_album(request: web.Request, slug: str, md: Metadata) -> None:
    """Refuse an ``album_id`` the caller cannot add to, before anything is stored: NotFound (404)
    when no album has that id, Forbidden (403) when it is someone else's (admins may add to any).
    It used to be ignored: the image landed outside the album and nobody was told. One CheckAlbum
    call (it was WhoAmI, then GetAlbum building every image of the album to read its owner)."""
    try:
        await call(request, "CheckAlbum", manager_pb2.CheckAlbumRequest(slug=slug), md)
    except errors.NotFound:
        raise errors.NotFound(f"album_id {printable(slug)[:64]!r}: no such album; nothing was uploaded") from None
    except errors.Forbidden:
        raise errors.Forbidden(f"album_id {printable(slug)[:64]!r} is another user's album; nothing was uploaded"
                               ) from None


def early_key(request: web.Request) -> str:
    """The API key sent before the body (header ``X-API-Key``, else ``?key=``), or ``""``. BadRequest
    (400) naming it for either sent twice, or both sent and different: the key checked before the
    body must be the one the upload counts against (the check took the query's first ``key``, the
    upload its last)."""
    refuse_repeated(request.headers, ("X-API-Key",))  # which of two keys would count?
    if len(request.query.getall("key", ())) > 1:
        raise errors.BadRequest("key was sent more than once in the query string: send it once")
    header, query = request.headers.get("X-API-Key", "").strip(), request.query.get("key", "").strip()
    if header and query and header != query:
        raise errors.BadRequest("two different API keys: X-API-Key and ?key= differ; send one key")
    return header or query


def too_large(request: web.Request, limit: int) -> None:
    """PayloadTooLarge (413) before the body is read when ``Content-Length`` is more than any body a
    file of ``limit`` bytes makes: as base64 in a url-encoded body (4/3 of the file, a little more
    for percent-encoded ``+``, ``/`` and ``=``) or in a form, with :data:`MULTIPART_SLACK` around
    it; bound: 3/2 of the limit plus that slack. It was found only after the whole body was read
    (and a user near their quota was told the quota, not the size, was the problem)."""
    if request.content_length is not None and request.content_length > limit * 3 // 2 + MULTIPART_SLACK:
        raise errors.PayloadTooLarge(f"request body of {request.content_length} bytes is more than a file of "
                                     f"the upload limit ({limit} bytes) can make, even as base64")


async def _upload(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    manager = request.app[MANAGER]
    early = early_key(request)
    # one body too many from this caller is a 429 before the address' budget is spent (web/bodies.py)
    with body_slot(request, caller_key(request, early)):
        counted = await check_ip(request, anonymous=False)  # without an API key it is refused (401)
        query = TextFields.of_query(request)  # a field repeated there is refused before the body is read
        asked_visibility(query.values.get("visibility"))  # a bad one is refused before the body is read
        too_large(request, settings.max_upload_bytes)
        if early:  # known before the body is read: a bad key, or its user over a limit, costs no upload
            async with not_counted_if_over_user_limits(request, counted):  # the user's 429, not the address'
                await check_user_limits(request, manager.as_api_key(early), encoded=True)
        async with idle_watch(request):  # 408 once the body stops arriving
            await send_continue(request)  # a client waiting on Expect: 100-continue may send the body now
            fields, source, filename = await _read_form(request, settings.max_upload_bytes, query)
    try:
        body_key = fields.get("key", "").strip()  # the query's when the body has none
        if early and body_key and body_key != early:  # the user checked above is the one who uploads
            raise errors.BadRequest("two different API keys: the form's 'key' field is not the one sent before "
                                    "the body (X-API-Key or ?key=); send one key")
        key = early or body_key
        if not key:
            raise errors.Unauthenticated("an API key is required (field 'key' or header X-API-Key)")
        if source is None:
            raise errors.BadRequest("no 'source' (or 'image') in the request")
        visibility = asked_visibility(fields.get("visibility"))
        fmt = fields.get("format", "").strip().lower() or "json"  # an empty field (a form builder's) is the default
        if fmt not in ("json", "txt", "redirect"):
            raise errors.BadRequest("format must be json, txt or redirect")
        expires = parse_duration(fields["expiration"]) if fields.get("expiration") else 0
        md = manager.as_api_key(key)
        album = fields.get("album_id", "").strip()
        if album:  # checked before the upload: a wrong album refuses it rather than dropping the album
            await _check_album(request, album, md)
        # the title goes with the upload: a new image gets it, a re-upload of an image the caller
        # already has (dedup) returns that image unchanged
        receipt = await manager.upload(md, source, filename, "", expire_after_s=expires,
                                       title=fields.get("title", ""), visibility=visibility)
    finally:
        if source is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(source.unlink)
    if album:
        await call(request, "UpdateAlbum",
                   manager_pb2.UpdateAlbumRequest(slug=album, add_images=[receipt.image.slug]), md)
    image = await manager.wait_ready(receipt.image, md, settings.upload_wait_s)
    note = private_duplicate_note(image, receipt.deduplicated)
    if fmt == "txt":
        return web.Response(text=direct_link(request, image), headers={NOTE_HEADER: note} if note else None)
    if fmt == "redirect":
        raise web.HTTPSeeOther(page_url(request, image))
    body = {**chevereto_image(request, image, expires), "deduplicated": receipt.deduplicated,
            "visibility": image.visibility or "public"}
    said = DEDUPLICATED if receipt.deduplicated else "image uploaded"
    if note:
        body["note"] = note
        said = f"{DEDUPLICATED}; {note}"
    return web.json_response({"status_code": 200, "success": {"message": said, "code": 200},
                              "image": body, "data": body, "status_txt": "OK"})
