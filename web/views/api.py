"""JSON API: ``POST /api/v1/images`` (upload), ``GET /api/v1/images/{slug}``, ``GET /api/v1/me``.

Callers are an API key (``Authorization: Bearer <key>``, ``X-API-Key``, or ``curl -u <key>:``; no
CSRF, nothing ambient), a browser session (cookie plus ``X-CSRF-Token``, since a cookie is ambient
authority), or nobody (anonymous upload). The upload is streamed to a temp file, never held
whole in memory, and refused with 413 once it passes ``max_upload_bytes``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp_session import get_session

from pixelfox import errors
from pixelfox.client.images import image_to_json, private_duplicate_note
from pixelfox.schemes import basic_api_key, refuse_repeated, split_scheme
from pixelfox.text import printable, safe_filename
from pixelfox.v1 import common_pb2, manager_pb2
from pixelfox.visibility import ANONYMOUS_PRIVATE, asked_visibility
from web.bodies import body_slot, caller_key, idle_watch
from web.calls import call
from web.cluster import Metadata
from web.deletion import deletion_url
from web.expect import send_continue
from web.expiration import parse_duration
from web.keys import MANAGER, SETTINGS, STATE
from web.ratelimit import check_ip, not_counted_if_over_user_limits
from web.sessions import CSRF_HEADER, CurrentUser, current_user, require_csrf
from web.views.common import check_origin, once_in_query

CHUNK = 256 * 1024
MULTIPART_SLACK = 64 * 1024  # headers and boundaries around the file part
TEXT_FIELD_LIMIT = 4096  # bytes of a text field (a title) that are read; the rest is dropped
#: what a browser may send to the site on its own, for a proxy or SSO in front of it: never an API key
PROXY_SCHEMES = frozenset({"basic", "digest", "negotiate", "ntlm"})
SCHEME_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,19}")  # Token, ApiKey, Digest...: shown in the 401
WAIT_SECONDS = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")  # ?wait=: plain ASCII decimal seconds


@dataclass(frozen=True)
class Caller:
    metadata: Sequence[tuple[str, str]]
    user: CurrentUser | None
    via: str  # "api-key" | "session" | "anonymous"


def api_key_of(request: web.Request) -> str:
    """The API key a request sends (``Authorization: Bearer <key>``, ``Authorization: Basic`` holding
    a key, else ``X-API-Key``), or ``""``.

    Raises Unauthenticated (401) for credentials that are sent but unusable, which used to make
    the call silently anonymous (an upload then landed outside the account): ``Bearer`` with no
    key, another scheme (``Token``, ``ApiKey``...), or an ``X-API-Key`` header that is empty (a
    script's unset variable). :data:`PROXY_SCHEMES` (``Basic``, ``Digest``, ``Negotiate``,
    ``NTLM``) are left alone: they belong to a proxy or single sign-on in front of the site (nginx
    ``auth_basic``, Kerberos), and browsers send them with every request; except ``Basic`` whose
    credentials are an API key (:func:`pixelfox.schemes.basic_api_key`: ``curl -u pfx_...:``),
    which counts as that key (it was an anonymous upload). Either header sent twice is a 400 naming
    it (the first one was taken silently), except ``Authorization`` headers that are all of
    :data:`PROXY_SCHEMES` with no API key: a proxy told to add one (Apache ``RequestHeader add``,
    HAProxy ``add-header``) may send two Basic headers, which are left alone as one is. BadRequest
    (400) too for a ``key`` query parameter on an ``/api/v1`` call (:func:`_refuse_key_in_url`) and
    for two different keys."""
    _refuse_key_in_url(request)
    refuse_repeated(request.headers, ("X-API-Key",))
    sent = request.headers.getall("Authorization", ())
    if len(sent) > 1 and any(split_scheme(v)[0].lower() not in PROXY_SCHEMES for v in sent):
        raise errors.BadRequest("Authorization was sent more than once: send it once")  # which one would count?
    scheme, credentials = split_scheme(sent[0] if sent else "")
    if scheme.lower() == "bearer":
        if not credentials:
            raise errors.Unauthenticated("Authorization: Bearer without an API key")
        return _one_key(request, credentials, "Authorization: Bearer")
    if scheme and scheme.lower() not in PROXY_SCHEMES:
        # a scheme name is a short token; anything else may be the key itself, never echoed
        named = f" {scheme!r}" if SCHEME_NAME.fullmatch(scheme) else ""
        raise errors.Unauthenticated(f"unsupported Authorization scheme{named}: send "
                                     "'Authorization: Bearer <API key>' or 'X-API-Key: <API key>'")
    if key := _basic_key(sent):
        return _one_key(request, key, "Authorization: Basic")
    if "X-API-Key" in request.headers and not request.headers["X-API-Key"].strip():
        raise errors.Unauthenticated("X-API-Key is empty")
    return request.headers.get("X-API-Key", "").strip()


def _refuse_key_in_url(request: web.Request) -> None:
    """BadRequest for ``?key=`` on an ``/api/v1`` call: only Chevereto's ``/api/1/upload`` reads it
    (:mod:`web.views.chevereto`), so the call went on anonymous (an upload landed outside the
    account); a key in a URL also ends up in access logs and browser history. The key is not echoed."""
    if request.path.startswith("/api/v1/") and "key" in request.query:
        raise errors.BadRequest("API keys in the URL are read only by /api/1/upload (Chevereto); send "
                                "'Authorization: Bearer <API key>' or 'X-API-Key: <API key>'")


def _basic_key(sent: Sequence[str]) -> str:
    """The API key in an ``Authorization: Basic`` header of ``sent`` (all :data:`PROXY_SCHEMES`), or
    ``""``; BadRequest when there is one but ``Authorization`` came more than once."""
    keys = [key for scheme, credentials in map(split_scheme, sent)
            if scheme.lower() == "basic" and (key := basic_api_key(credentials))]
    if keys and len(sent) > 1:
        raise errors.BadRequest("Authorization was sent more than once: send it once")  # which one would count?
    return keys[0] if keys else ""


def _one_key(request: web.Request, key: str, said: str) -> str:
    """``key`` (sent in ``said``), or BadRequest when ``X-API-Key`` holds another one."""
    other = request.headers.get("X-API-Key", "").strip()
    if other and other != key:  # which one would count? (X-API-Key was ignored silently)
        raise errors.BadRequest(f"two different API keys: {said} and X-API-Key differ; send one key")
    return key


async def resolve_caller(request: web.Request, *, state_changing: bool) -> Caller:
    """Who is calling; a session caller doing a state change must send the CSRF header (403), and one
    whose API key came as ``Authorization: Basic`` must not come from another site (403): a browser
    sends Basic credentials it holds by itself, as it sends a cookie."""
    manager = request.app[MANAGER]
    key = api_key_of(request)
    if key:
        if state_changing and split_scheme(request.headers.get("Authorization", ""))[0].lower() == "basic":
            check_origin(request)
        return Caller(manager.as_api_key(key), None, "api-key")
    session = await get_session(request)
    user = current_user(session)
    if user is None:
        return Caller(manager.as_user(), None, "anonymous")
    if state_changing:
        check_origin(request)
        require_csrf(session, request.headers.get(CSRF_HEADER))
    return Caller(manager.as_user(user.id), user, "session")


def image_json(request: web.Request, image: common_pb2.Image) -> dict[str, Any]:
    """:func:`pixelfox.client.images.image_to_json` with the share-page ``url``, ``visibility``
    (``public`` | ``private``) and an empty ``deletion_url``. ``original_url`` is the clean
    original (metadata removed; ``""`` while processing), or the stored upload when its owner
    opted in (``keep_metadata``): an upload answer goes to scripts and screenshot tools, whose
    links get pasted, so it never hands out the stored upload with its GPS
    (:func:`web.views.api_v1.public_image_json` does, for the owner's own session)."""
    body = image_to_json(image)
    body["url"] = page_url(request, image)
    body["visibility"] = image.visibility or "public"
    body["deletion_url"] = ""
    return body


def page_url(request: web.Request, image: common_pb2.Image) -> str:
    """The absolute share-page URL (the manager may send none, or a path without its origin)."""
    url = image.url or f"/i/{image.slug}"
    return f"{request.app[STATE].public_url}{url}" if url.startswith("/") else url


async def _save_part(part: BodyPartReader, limit: int) -> Path:
    """Stream ``part`` into a temp file; :class:`PayloadTooLarge` past ``limit`` bytes."""
    fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="pixelfox-web-")
    path = Path(name)
    f: BinaryIO = os.fdopen(fd, "wb")
    total = 0
    try:
        while chunk := await part.read_chunk(CHUNK):
            total += len(chunk)
            if total > limit:
                raise errors.PayloadTooLarge(f"file larger than {limit} bytes")
            await asyncio.to_thread(f.write, chunk)
        await asyncio.to_thread(f.close)
    except BaseException:
        f.close()
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return path


_QUOTED_FILENAME = re.compile(r'(?:^|;)\s*filename\s*=\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)
_LITERAL_BACKSLASH = re.compile(r'\\[^"\\]')  # "\U" in C:\Users: not an escape


def part_filename(part: BodyPartReader) -> str:
    """The file name of a multipart part as the client sent it, cleaned by :func:`safe_filename`.

    aiohttp reads ``filename="..."`` as an RFC 2616 quoted string, which is right for clients that
    escape (curl sends ``a\\"b`` for ``a"b`` and ``\\\\`` for ``\\``), but a client that does not
    (WHATWG HTML's multipart/form-data percent-encodes ``"`` and leaves ``\\`` alone; old browsers
    and some tools send a whole Windows path) had ``C:\\Users\\me\\cat.png`` turned into
    ``C:Usersmecat.png``. A backslash before anything but ``"`` or ``\\`` is no escape any escaping
    client writes, so such a name is taken as sent and its last path part kept: ``cat.png``. An
    RFC 5987 ``filename*`` is left to aiohttp."""
    raw = part.headers.get("Content-Disposition", "")
    if "filename*" in raw.lower():
        return safe_filename(part.filename)
    if (m := _QUOTED_FILENAME.search(raw)) and _LITERAL_BACKSLASH.search(m.group(1)):
        return safe_filename(_html_escapes(m.group(1)))
    return safe_filename(_html_escapes(part.filename or ""))


#: what WHATWG HTML's multipart/form-data encoding (browsers, curl 7.81+) writes for ``"``, CR and LF
_HTML_FILENAME_ESCAPES = re.compile("%(22|0D|0A)", re.IGNORECASE)


def _html_escapes(name: str) -> str:
    """``name`` with the three escapes a browser or curl writes in a multipart file name undone
    (``%22`` is ``"``, ``%0D`` and ``%0A`` line breaks, which :func:`safe_filename` then drops):
    ``say "hi".png`` was stored as ``say %22hi%22.png``. Other ``%XX`` stay as sent (a real name may
    hold them, and no client escapes them: https://html.spec.whatwg.org/#multipart-form-data)."""
    return _HTML_FILENAME_ESCAPES.sub(lambda m: chr(int(m.group(1), 16)), name)


def malformed_multipart(exc: BaseException) -> errors.BadRequest | None:
    """The 400 for an exception aiohttp raised while reading a multipart body, in our words; None
    when ``exc`` is not about the body's form (ours, a cancellation...)."""
    if isinstance(exc, errors.PixelfoxError):
        return None
    if isinstance(exc, LineTooLong):  # aiohttp's 8190-byte limit on a part's header line
        return errors.BadRequest("malformed multipart body: a part header line is too long (a file name of "
                                 "thousands of characters?)")
    if isinstance(exc, HttpProcessingError):  # aiohttp refuses a part's header line
        return errors.BadRequest("malformed multipart body: a part header is invalid; a control character in "
                                 "a file name (Content-Disposition) is the usual cause")
    if isinstance(exc, ValueError | UnicodeDecodeError | AssertionError):  # no boundary, cut short...
        return errors.BadRequest(f"malformed multipart body: {printable(str(exc))[:120]}")
    return None


def _check_form_head(request: web.Request, limit: int) -> None:
    """Refuse from the headers alone a body :func:`_receive_file` would refuse: PayloadTooLarge when
    ``Content-Length`` passes ``limit`` bytes plus :data:`MULTIPART_SLACK`, BadRequest when it is not
    multipart."""
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise errors.PayloadTooLarge(f"file larger than {limit} bytes")
    if not request.content_type.startswith("multipart/"):
        raise errors.BadRequest("send multipart/form-data with the image in the field 'file'")


async def check_user_limits(request: web.Request, metadata: Metadata, *, encoded: bool = False) -> None:
    """Refuse, before a byte of its body is read, a one-shot upload that the per-user limits of the
    caller in ``metadata`` (an API key, or a session's user) would refuse once it was all in:
    uploads a minute, open uploads, quota (the manager's ``CheckUpload``; one RPC, which counts
    nothing: ``CreateUpload`` counts the upload once, after the body is read).

    The file is taken to be ``Content-Length`` less :data:`MULTIPART_SLACK` (the form around it, as
    the 413 check assumes), halved when ``encoded`` (the file may come as base64 text, percent-encoded
    in a url-encoded body: about 1.4 bytes of body per byte of file), and at least 1 byte (no
    ``Content-Length``: a chunked body). A form with more than 64 KiB besides the file may so be
    refused on quota here though its file fits; the QuotaExceeded message names the body's size, not
    the file's (the manager is sent both). Raises RateLimited and TooManyOpenUploads (429, with
    ``retry_after_s`` in seconds), QuotaExceeded (413), Unauthenticated (401) for an API key the
    manager does not know. Admins, and limits set to 0, pass as they do in ``CreateUpload``; so does
    every caller while the manager is older than ``CheckUpload`` (a rolling upgrade), whose
    ``CreateUpload`` still refuses them, after the body."""
    body = request.content_length or 0
    size = max(1, (body - MULTIPART_SLACK) // (2 if encoded else 1))
    await call(request, "CheckUpload", manager_pb2.CheckUploadRequest(size=size, body_bytes=body), metadata,
               optional=True)


#: the most parts an upload form may have: ShareX sends 2 (file, title), a Chevereto client about 10; a form
#: of thousands of tiny fields held the web node's event loop for seconds (every other request waited)
MAX_FORM_PARTS = 64


async def form_parts(request: web.Request) -> AsyncIterator[Any]:
    """The parts of ``request``'s multipart body, in order; BadRequest at the part after
    :data:`MAX_FORM_PARTS`, before it is read."""
    reader = await request.multipart()
    count = 0
    while (part := await reader.next()) is not None:
        count += 1
        if count > MAX_FORM_PARTS:
            raise errors.BadRequest(f"the form has more than {MAX_FORM_PARTS} fields; an upload needs its file "
                                    "and a few text fields")
        yield part


#: the text fields of ``POST /api/v1/images`` besides its file; each may come once
TEXT_PARTS = ("title", "expiration", "visibility")


async def _receive_file(request: web.Request, limit: int) -> tuple[Path, str, str, dict[str, str]]:
    """The form's ``file`` as ``(temp path, file name, declared type, texts)``; ``texts`` holds the
    optional text fields of :data:`TEXT_PARTS` that came (each its first :data:`TEXT_FIELD_LIMIT`
    bytes, UTF-8). BadRequest for a malformed form, a missing or second file, a text field sent twice
    or one that is not UTF-8; PayloadTooLarge past ``limit`` bytes. The caller checked the headers
    first (:func:`_check_form_head`)."""
    saved: tuple[Path, str, str] | None = None
    texts: dict[str, str] = {}
    try:
        async for part in form_parts(request):
            if isinstance(part, BodyPartReader) and part.name == "file":
                if saved is not None:
                    raise errors.BadRequest("one file per request: the form has a second 'file' field")
                filename = part_filename(part)
                ctype = part.headers.get("Content-Type", "application/octet-stream")
                saved = (await _save_part(part, limit), filename, ctype)
            elif isinstance(part, BodyPartReader) and part.name in TEXT_PARTS:
                name = part.name
                if name in texts:
                    raise errors.BadRequest(f"one {name} per request: the form has a second '{name}' field")
                raw = await first_bytes(part, TEXT_FIELD_LIMIT)
                try:  # a character split by the cut at TEXT_FIELD_LIMIT is dropped (that text is too long anyway)
                    texts[name] = codecs.getincrementaldecoder("utf-8")().decode(
                        raw, final=len(raw) < TEXT_FIELD_LIMIT)
                except UnicodeDecodeError:
                    raise errors.BadRequest(f"the {name} is not UTF-8 text") from None
            else:
                await part.release()
    except BaseException as exc:
        _discard(saved)
        if (bad := malformed_multipart(exc)) is not None:
            raise bad from None
        raise
    if saved is None:
        raise errors.BadRequest("no 'file' field in the form")
    return (*saved, texts)


def _upload_field(request: web.Request, name: str, texts: dict[str, str] | None, body: str = "form") -> str | None:
    """Upload setting ``name`` from the query string or, once the body is read (``texts``), the ``body`` (its
    word in errors: "form", "JSON body"); None when sent in neither. BadRequest when sent twice (in the
    query string, or in both places): which one counted would be a guess."""
    given = request.query.getall(name, [])
    if len(given) > 1:
        raise errors.BadRequest(f"{name} was sent more than once in the query string: send it once")
    if texts is not None and name in texts:
        if given:
            raise errors.BadRequest(f"{name} was sent in both the query string and the {body}: send it once")
        given = [texts[name]]
    return given[0] if given else None


def _expiration(request: web.Request, texts: dict[str, str] | None = None) -> int:
    """Seconds until the upload expires (0 = never): ``expiration`` from the query string or, once the
    body is read (``texts``), the form (:func:`_upload_field`), in :func:`web.expiration.parse_duration`'s
    syntax. BadRequest when malformed, or sent twice."""
    given = _upload_field(request, "expiration", texts)
    return parse_duration(given) if given and given.strip() else 0


def upload_visibility(request: web.Request, texts: dict[str, str] | None = None, *, anonymous: bool,
                      body: str = "form") -> str:
    """The visibility an upload asks for (:func:`pixelfox.visibility.asked_visibility`: ``public`` when not
    sent): ``visibility`` from the query string or, once the body is read (``texts``), the ``body``
    (:func:`_upload_field`). BadRequest naming any value but public or private, for one sent twice, and for
    ``private`` from an ``anonymous`` caller (:data:`~pixelfox.visibility.ANONYMOUS_PRIVATE`; the manager says the
    same, this says it before the body is sent)."""
    visibility = asked_visibility(_upload_field(request, "visibility", texts, body))
    if visibility == "private" and anonymous:
        raise errors.BadRequest(ANONYMOUS_PRIVATE)
    return visibility


async def first_bytes(part: BodyPartReader, keep: int) -> bytes:
    """The first ``keep`` bytes of a text part; the rest is read and dropped (aiohttp's own read
    answers a part over 1 MiB with a 413 of its own shape)."""
    kept = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        if len(kept) < keep:
            kept += chunk[:keep - len(kept)]
    return bytes(kept)


def _discard(saved: tuple[Path, str, str] | None) -> None:
    """Remove the temp file of a form that turned out bad after its file was saved."""
    if saved is not None:
        saved[0].unlink(missing_ok=True)


def _wait_seconds(request: web.Request) -> float:
    """Seconds to wait for processing: ``?wait=`` (plain decimal seconds such as ``5`` or ``2.5``, capped
    at ``upload_wait_s``; ``0``, ``false`` or ``no`` = not at all), else ``upload_wait_s``. BadRequest
    for anything else (``nan``, ``-5``, ``soon``, ``1_0``, ``1e3``, non-ASCII digits), which used to
    mean "do not wait" or the default silently."""
    maximum = request.app[SETTINGS].upload_wait_s
    once_in_query(request, "wait")  # ?wait=0&wait=30: which? (the first counted)
    raw = request.query.get("wait", "").strip()
    if raw.lower() in ("0", "false", "no"):
        return 0.0
    if not raw:
        return maximum
    if not WAIT_SECONDS.fullmatch(raw):
        raise errors.BadRequest(
            f"wait must be a number of seconds (a larger one than {maximum:g} waits {maximum:g}), or false")
    seconds = float(raw)
    return min(seconds, maximum)


async def upload(request: web.Request) -> web.Response:
    """``POST /api/v1/images``: one multipart upload (field ``file``, optional ``title``, ``expiration`` and
    ``visibility``, the latter two also in the query string: :func:`_expiration`, :func:`upload_visibility`),
    answered 201 with the image's JSON once processed or ``?wait=`` ran out; a private upload's image is
    ``private`` in that answer already (nodes/manager/uploads.py ``Uploads.complete``).

    Everything the headers tell is refused before the body is read: credentials (401, CSRF 403),
    anonymous uploads on a site without them (401), a bad ``?wait=`` (400), the address' budget and
    a signed-in caller's per-user limits (429: :func:`web.ratelimit.check_ip`,
    :func:`check_user_limits`; a per-user 429 does not count against the address' budget), a
    declared ``Content-Length`` over the upload limit (413). A client that sent ``Expect:
    100-continue`` (curl, for a body over 1 MiB) gets that refusal instead of ``100 Continue``, and
    sends no byte of the body (:mod:`web.expect`). The body then streams to a temp file (413 past the
    limit, 400 for a malformed form)."""
    caller = await resolve_caller(request, state_changing=True)
    settings = request.app[SETTINGS]
    if caller.via == "anonymous" and not settings.allow_anonymous:  # before a byte of the body is read
        raise errors.Unauthenticated("this site takes no anonymous uploads: log in, or send an API key")
    manager = request.app[MANAGER]
    wait_s = _wait_seconds(request)  # a bad ?wait= is refused before any byte is kept
    _expiration(request)  # and a bad ?expiration=
    upload_visibility(request, anonymous=caller.via == "anonymous")  # and a bad ?visibility= (private: not anonymous)
    # one body too many from this caller is a 429 before the address' budget is spent (web/bodies.py)
    with body_slot(request, caller_key(request, api_key_of(request), caller.user.id if caller.user else "")):
        counted = await check_ip(request, anonymous=caller.via == "anonymous")
        _check_form_head(request, settings.max_upload_bytes)
        if caller.via != "anonymous":  # a user over a limit is refused now, not after sending the whole file
            async with not_counted_if_over_user_limits(request, counted):
                await check_user_limits(request, caller.metadata)
        async with idle_watch(request):  # 408 once the body stops arriving
            await send_continue(request)  # everything the headers tell is checked: the client may send the body
            path, filename, ctype, texts = await _receive_file(request, settings.max_upload_bytes)
    try:
        expires = _expiration(request, texts)
        visibility = upload_visibility(request, texts, anonymous=caller.via == "anonymous")
        receipt = await manager.upload(caller.metadata, path, filename, ctype, expire_after_s=expires,
                                       title=texts.get("title", ""), visibility=visibility)
    finally:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(path.unlink)
    image = await manager.wait_ready(receipt.image, caller.metadata, wait_s)
    body = image_json(request, image)
    body["deletion_url"] = deletion_url(request, image)  # only the uploader sees it (web/deletion.py)
    body["deduplicated"] = receipt.deduplicated  # the caller's existing image, unchanged (title too)
    if note := private_duplicate_note(image, receipt.deduplicated):
        body["note"] = note
    return web.json_response(body, status=201)


async def get_image(request: web.Request) -> web.Response:
    caller = await resolve_caller(request, state_changing=False)
    image = await request.app[MANAGER].get_image(request.match_info["slug"], caller.metadata)
    return web.json_response(image_json(request, image))


async def me(request: web.Request) -> web.Response:
    """The caller's user (session or API key); 401 when anonymous."""
    key = api_key_of(request)
    if key:
        u = await request.app[MANAGER].who_am_i(key)
        return web.json_response({"id": u.id, "name": u.name, "role": u.role, "via": "api-key"})
    user = current_user(await get_session(request))
    if user is None:
        raise errors.Unauthenticated("not logged in")
    return web.json_response({"id": user.id, "name": user.name, "role": user.role, "via": "session"})
