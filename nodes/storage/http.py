"""The storage node's own HTTP origin: objects at ``/o/<key>`` plus ``/healthz`` and ``/readyz``.

Objects are immutable (content-addressed keys), so every response carries
``Cache-Control: public, max-age=31536000, immutable``, the strong ETag ``"<sha256>"``,
``Last-Modified``, ``Accept-Ranges: bytes``, the exact ``Content-Type`` for the key's extension,
``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox`` (an image that is
really HTML or SVG cannot script this origin). ``If-None-Match``/``If-Modified-Since`` give 304,
``If-Match`` 412, one ``Range`` gives 206 (``If-Range`` honoured), an unsatisfiable one 416 with
``Content-Range: bytes */<size>``.

Range and conditionals are handled here rather than by ``web.FileResponse``, which would
answer with its own mtime/size ETag and cannot serve a non-local (S3) store. Bytes come from
``Store.open_range`` in 256 KiB chunks. A private object (``p/<salt>/...`` key) needs
``?exp=&sig=`` signed with a key from :mod:`pixelfox.signing` (403 otherwise) and is sent
with ``Cache-Control: private, no-store``. Every error is a JSON body
``{"error": {"code", "message"}}``; anything that is not a valid key is a 404.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import hdrs, web
from aiohttp.helpers import ETAG_ANY
from prometheus_client import Counter

from nodes.storage.service import StorageService
from pixelfox import errors, signing
from pixelfox.storage.base import CHUNK_SIZE, ObjectInfo
from pixelfox.storage.keys import is_original_key, is_private_key, validate_key

logger = logging.getLogger(__name__)

SERVICE: web.AppKey[StorageService] = web.AppKey("service", StorageService)
#: keys that verify signed URLs of private objects (``p/...``), see :mod:`pixelfox.signing`
URL_KEYS: web.AppKey[list[bytes]] = web.AppKey("url_keys", list)
#: whether originals (``o/...``) need a signed URL like private objects (StorageNodeSettings.sign_originals)
SIGN_ORIGINALS: web.AppKey[bool] = web.AppKey("sign_originals", bool)
PRIVATE = "private, no-store"

HTTP_REQUESTS = Counter(
    "pixelfox_storage_http_requests_total", "HTTP requests on the storage origin", ["method", "code"]
)
HTTP_SENT = Counter("pixelfox_storage_http_sent_bytes_total", "Object bytes sent over HTTP")

IMMUTABLE = "public, max-age=31536000, immutable"
#: local objects up to this size are read on the event loop and sent with the headers in one write
#: (a page-cache read of this size takes microseconds, less than a thread hand-off); larger ones
#: go by sendfile (asyncio loop) or by 1 MiB reads in a thread (uvloop)
INLINE_READ_BYTES = 256 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(err: errors.PixelfoxError, status: int | None = None) -> web.Response:
    return web.json_response({"error": err.to_dict()}, status=status or err.http_status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    method = request.method if request.method in ("GET", "HEAD") else "other"
    try:
        resp = await handler(request)
    except errors.PixelfoxError as exc:
        resp = _json_error(exc)
    except web.HTTPException as exc:
        if exc.status == 404:
            resp = _json_error(errors.NotFound())
        else:
            err = errors.BadRequest(exc.reason) if exc.status < 500 else errors.PixelfoxError()
            resp = web.json_response({"error": err.to_dict()}, status=exc.status, headers=exc.headers)
            resp.headers[hdrs.CONTENT_TYPE] = "application/json; charset=utf-8"
    except Exception:
        logger.exception("unhandled error serving %s", request.path)
        resp = _json_error(errors.PixelfoxError())
    HTTP_REQUESTS.labels(method, str(resp.status)).inc()
    return resp


def _object_headers(info: ObjectInfo) -> dict[str, str]:
    return {
        hdrs.ETAG: info.etag,
        hdrs.CACHE_CONTROL: IMMUTABLE,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        hdrs.ACCEPT_RANGES: "bytes",
    }


def _not_modified(request: web.Request, info: ObjectInfo) -> bool:
    inm = request.if_none_match
    if inm is not None:
        return any(e.value in (ETAG_ANY, info.sha256) for e in inm)
    ims = request.if_modified_since
    return ims is not None and int(info.mtime) <= ims.timestamp()


def _precondition_failed(request: web.Request, info: ObjectInfo) -> bool:
    im = request.if_match
    return im is not None and not any(
        e.value == ETAG_ANY or (e.value == info.sha256 and not e.is_weak) for e in im
    )


def _range_applies(request: web.Request, info: ObjectInfo) -> bool:
    if hdrs.RANGE not in request.headers:
        return False
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is None:
        return True
    if if_range.startswith('"'):
        return if_range == info.etag
    since = request.if_range
    return since is not None and int(info.mtime) <= since.timestamp()


def _byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """``(start, count)`` of a satisfiable single range, ``None`` if unsatisfiable/malformed."""
    try:
        rng = request.http_range
    except ValueError:
        return None
    start, stop = rng.start, rng.stop
    if start is None:
        return None
    if start < 0:  # suffix: the last -start bytes
        start = max(0, size + start)
        stop = size
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        return None
    return start, stop - start


async def get_object(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    key = request.match_info["key"]
    try:
        if "%" in request.raw_path:
            raise errors.BadRequest()
        validate_key(key)
        found = await service.lookup(key)  # BadRequest too if the path leaves the root
    except errors.BadRequest:
        raise errors.NotFound() from None
    info, path = found if found is not None else (None, None)
    private = is_private_key(key) or (request.app.get(SIGN_ORIGINALS, True) and is_original_key(key))
    if private and not signing.verify(
        request.app.get(URL_KEYS, []), key, request.query.get("exp"), request.query.get("sig")
    ):
        return web.json_response(
            {"error": {"code": "forbidden", "message": "a valid, unexpired signature is required"}},
            status=403,
            headers={hdrs.CACHE_CONTROL: PRIVATE},
        )
    if info is None:
        raise errors.NotFound()
    headers = _object_headers(info)
    if private:
        headers[hdrs.CACHE_CONTROL] = PRIVATE
    if _precondition_failed(request, info):
        return web.json_response(
            {"error": {"code": "precondition-failed", "message": "ETag does not match"}}, status=412
        )
    if _not_modified(request, info):
        resp = web.StreamResponse(status=304, headers=headers)
        resp.last_modified = info.mtime
        return resp
    start, count, status = 0, info.size, 200
    if _range_applies(request, info):
        rng = _byte_range(request, info.size)
        if rng is None:
            headers[hdrs.CONTENT_RANGE] = f"bytes */{info.size}"
            return web.json_response(
                {"error": {"code": "range-not-satisfiable", "message": "range not satisfiable"}},
                status=416,
                headers=headers | {hdrs.CACHE_CONTROL: "no-store"},
            )
        start, count = rng
        status = 206
        headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{start + count - 1}/{info.size}"
    if service.accel_redirect and path is not None:
        return _accel(service.accel_redirect, key, info, headers)
    return await _send(request, service, key, info, path, status, headers, start, count)


async def _send(
    request: web.Request, service: StorageService, key: str, info: ObjectInfo, path: Path | None, status: int,
    headers: dict[str, str], start: int, count: int,
) -> web.StreamResponse:
    """Send ``count`` bytes from ``start``: from a local pool by one read or ``sendfile``, else streamed."""
    fobj = None
    if path is not None and request.method != hdrs.METH_HEAD:
        try:  # local pool: the kernel sends the bytes (sendfile), no thread hop per chunk
            fobj = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
        except FileNotFoundError:
            service.forget(key)
            raise errors.NotFound() from None
        if count <= INLINE_READ_BYTES:  # small object: one read (page cache) and one write with the headers
            with fobj:
                data = os.pread(fobj.fileno(), count, start)
            if len(data) != count:
                service.forget(key)
                raise errors.NotFound(f"{key} changed on disk")
            small = web.Response(status=status, headers=headers, body=data, content_type=info.content_type)
            small.last_modified = info.mtime
            HTTP_SENT.inc(count)
            return small
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_type = info.content_type
    resp.content_length = count
    resp.last_modified = info.mtime
    try:
        return await _write_body(request, service, key, resp, fobj, start, count)
    except ConnectionResetError:  # the client went away mid-answer: nothing more to do or log
        return resp


async def _write_body(
    request: web.Request, service: StorageService, key: str, resp: web.StreamResponse, fobj: BinaryIO | None,
    start: int, count: int,
) -> web.StreamResponse:
    if fobj is not None:
        with fobj:
            loop = asyncio.get_running_loop()
            if isinstance(loop, asyncio.BaseEventLoop):  # asyncio's loop: the kernel copies (sendfile)
                await resp.prepare(request)
                if request.transport is None:
                    raise ConnectionResetError("connection lost")
                await loop.sendfile(request.transport, fobj, start, count)
            else:  # uvloop has no working sendfile here: one read (small: inline, page cache) and one write
                fd = fobj.fileno()
                await resp.prepare(request)
                pos, end = start, start + count
                while pos < end:
                    data = await asyncio.to_thread(os.pread, fd, min(CHUNK_SIZE * 4, end - pos), pos)
                    if not data:
                        raise ConnectionResetError(f"{key} shrank while being sent")
                    await resp.write(data)
                    pos += len(data)
            HTTP_SENT.inc(count)
        await resp.write_eof()
        return resp
    if request.method == hdrs.METH_HEAD:
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    chunks = aiter(service.store.open_range(key, start, count))
    try:  # the first read before the headers: an object deleted meanwhile is still a clean 404
        first = await anext(chunks, b"")
    except errors.NotFound:
        service.forget(key)
        raise
    await resp.prepare(request)
    if first:
        await resp.write(first)
        HTTP_SENT.inc(len(first))
    async for chunk in chunks:
        await resp.write(chunk)
        HTTP_SENT.inc(len(chunk))
    await resp.write_eof()
    return resp


def _accel(prefix: str, key: str, info: ObjectInfo, headers: dict[str, str]) -> web.Response:
    """Let nginx send the bytes: an empty answer naming the file under its ``internal`` location.

    Conditionals (304/412) were answered already; nginx serves ``Range`` from the file itself.
    nginx keeps ``Content-Type``, ``Cache-Control`` and ``Accept-Ranges`` from this answer; its
    location re-adds ``ETag``, ``Last-Modified`` and the security headers from
    ``$upstream_http_*`` (docs/storage.md has the location block).
    """
    headers = {k: v for k, v in headers.items() if k != hdrs.CONTENT_RANGE}
    headers["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + key
    resp = web.Response(status=200, headers=headers, content_type=info.content_type)
    resp.last_modified = info.mtime
    return resp


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ok = await request.app[SERVICE].ready()
    return web.json_response({"status": "ready" if ok else "not-ready"}, status=200 if ok else 503)


def build_app(service: StorageService, url_keys: list[bytes] | None = None, sign_originals: bool = True,
              **kwargs: Any) -> web.Application:
    app = web.Application(middlewares=[error_middleware], **kwargs)
    app[SERVICE] = service
    app[URL_KEYS] = list(url_keys or [])
    app[SIGN_ORIGINALS] = sign_originals
    app.router.add_get("/o/{key:.+}", get_object)  # GET also answers HEAD
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
