"""The storage node's own HTTP origin: objects at ``/o/<key>`` plus ``/healthz`` and ``/readyz``.

A raw ASGI application served by uvicorn (httptools parser, uvloop): the origin answers tens of
thousands of small-object requests a second, so it skips a web framework's per-request layers
(``bench/serving.py``, docs/benchmarks.md). uvicorn owns the HTTP/1.1 protocol (keep-alive,
pipelining, ``HEAD`` bodies, flow control, limits); this module only decides each answer.

Objects are immutable (content-addressed keys), so every response carries
``Cache-Control: public, max-age=31536000, immutable``, the strong ETag ``"<sha256>"``,
``Last-Modified``, ``Accept-Ranges: bytes``, the exact ``Content-Type`` for the key's extension,
``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox`` (an image that is
really HTML or SVG cannot script this origin). ``If-None-Match``/``If-Modified-Since`` give 304,
``If-Match`` 412, one ``Range`` gives 206 (``If-Range`` honoured; RFC 9110 §13-14), an
unsatisfiable or malformed one 416 with ``Content-Range: bytes */<size>``; several ranges or
another unit than ``bytes`` are ignored (200, the whole object). A private object
(``p/<salt>/...``), and an original when ``sign_originals`` is on, needs ``?exp=&sig=`` signed with
a key from :mod:`pixelfox.signing` (403 otherwise) and is sent with ``Cache-Control: private,
no-store``; so is any object asked with ``?download=<file name>`` (signed with the name), which
adds ``Content-Disposition: attachment`` (:mod:`pixelfox.disposition`; a name that is not plain is
a 400). Every error is a JSON body ``{"error": {"code", "message"}}``; anything that is not
a valid key is a 404. Local objects up to :data:`INLINE_READ_BYTES` are read with one ``pread``
on the event loop (page cache: microseconds); larger ones and S3 objects are streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from nodes.storage.service import StorageService
from pixelfox import disposition, errors, signing
from pixelfox.numbers import is_ascii_digits
from pixelfox.storage.base import CHUNK_SIZE, ObjectInfo
from pixelfox.storage.keys import is_original_key, is_private_key, validate_key

logger = logging.getLogger(__name__)

PRIVATE = "private, no-store"
IMMUTABLE = "public, max-age=31536000, immutable"
#: local objects up to this size (bytes) are read on the event loop and sent in one body message
INLINE_READ_BYTES = 256 * 1024
#: bytes per read when streaming a larger local object (in a thread)
STREAM_READ_BYTES = 4 * CHUNK_SIZE



class _Tally(Collector):
    """The origin's request and byte counters as plain ints, exported as Prometheus counters when
    scraped (``pixelfox_storage_http_requests_total{method,code}``,
    ``pixelfox_storage_http_sent_bytes_total``): a ``Counter.inc`` takes a lock on every request."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.sent = 0

    def count(self, method: str, status: int, sent: int) -> None:
        key = (method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.sent += sent

    def collect(self) -> Iterator[Metric]:
        req = CounterMetricFamily("pixelfox_storage_http_requests", "HTTP requests on the storage origin",
                                  labels=["method", "code"])
        for (method, status), n in list(self.requests.items()):
            req.add_metric([method, str(status)], n)
        yield req
        yield CounterMetricFamily("pixelfox_storage_http_sent_bytes", "Object bytes sent over HTTP", value=self.sent)


TALLY = _Tally()
REGISTRY.register(TALLY)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


@functools.lru_cache(maxsize=100_000)
def _object_headers(info: ObjectInfo, private: bool) -> tuple[tuple[bytes, bytes], ...]:
    """The headers every answer about ``info`` carries (objects never change: cached per object)."""
    return (
        (b"etag", info.etag.encode()),
        (b"cache-control", (PRIVATE if private else IMMUTABLE).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"content-security-policy", b"sandbox"),
        (b"accept-ranges", b"bytes"),
        (b"last-modified", formatdate(int(info.mtime), usegmt=True).encode()),
    )


def _etags(value: str) -> Iterator[tuple[str, bool]]:
    """``(etag, weak)`` for each entity tag in an ``If-None-Match``/``If-Match`` list (``*`` as is)."""
    for part in value.split(","):
        tag = part.strip()
        weak = tag.startswith("W/")
        yield (tag[2:] if weak else tag), weak


def _http_time(value: str | None) -> float | None:
    """Unix seconds of an HTTP date (RFC 9110 §5.6.7), ``None`` when absent or malformed."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def not_modified(h: dict[str, str], info: ObjectInfo) -> bool:
    """RFC 9110 §13.1.2-3: ``If-None-Match`` (weak comparison) wins over ``If-Modified-Since``."""
    inm = h.get("if-none-match")
    if inm is not None:
        return any(tag in ("*", info.etag) for tag, _ in _etags(inm))
    since = _http_time(h.get("if-modified-since"))
    return since is not None and int(info.mtime) <= since


def precondition_failed(h: dict[str, str], info: ObjectInfo) -> bool:
    """RFC 9110 §13.1.1: ``If-Match`` needs a strong match (or ``*``)."""
    im = h.get("if-match")
    return im is not None and not any(tag == "*" or (tag == info.etag and not weak) for tag, weak in _etags(im))


def range_applies(h: dict[str, str], info: ObjectInfo) -> bool:
    """A ``Range`` is honoured unless an ``If-Range`` names another version (RFC 9110 §13.1.5), its
    unit is not ``bytes`` (§14.2: a server MUST ignore a unit it does not understand), or it asks
    for several ranges (no ``multipart/byteranges`` answers here; §14.2 lets a server ignore
    ``Range``): those get the whole object, 200."""
    if "range" not in h:
        return False
    unit, _, spec = h["range"].partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return False
    if_range = h.get("if-range")
    if if_range is None:
        return True
    if if_range.startswith('"'):
        return if_range == info.etag
    since = _http_time(if_range)
    return since is not None and int(info.mtime) <= since


def byte_range(value: str, size: int) -> tuple[int, int] | None:
    """``(start, count)`` of one satisfiable ``bytes=`` range of an object of ``size`` bytes;
    ``None`` when malformed or unsatisfiable (answered 416; :func:`range_applies` has set
    other units and several ranges aside)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first or last) or (first and not is_ascii_digits(first)) \
            or (last and not is_ascii_digits(last)):
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        start, stop = max(0, size - n), size
        if n == 0:
            return None
    else:
        start = int(first)
        stop = size if not last else min(int(last) + 1, size)
        if last and int(last) < start:
            return None
    if start >= size or stop <= start:
        return None
    return start, stop - start


class Origin:
    """The ASGI application of a storage node's HTTP origin.

    ``url_keys`` verify signed URLs (:func:`pixelfox.signing.verify`); ``sign_originals`` makes
    originals (``o/...``) need one like private objects (StorageNodeSettings.sign_originals).
    """

    def __init__(self, service: StorageService, url_keys: list[bytes] | None = None,
                 sign_originals: bool = True) -> None:
        self.service = service
        self.url_keys = list(url_keys or [])
        self.sign_originals = sign_originals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no lifespan or websocket here
            return
        method = scope["method"]
        label = method if method in ("GET", "HEAD") else "other"
        path: str = scope["path"]
        try:
            if method not in ("GET", "HEAD"):
                status = await self._error(send, 405, "method-not-allowed", "only GET and HEAD",
                                           [(b"allow", b"GET, HEAD")])
            elif path.startswith("/o/"):
                status = await self._object(scope, send, path[3:])
            elif path == "/healthz":
                status = await self._json(send, 200, {"status": "ok"})
            elif path == "/readyz":
                ok = await self.service.ready()
                status = await self._json(send, 200 if ok else 503, {"status": "ready" if ok else "not-ready"})
            else:
                status = await self._error(send, 404, "not-found", "not found")
        except (ConnectionError, OSError) as exc:  # the client went away mid-answer
            logger.debug("answer to %s cut short: %s", path, exc)
            status = 499
        TALLY.count(label, status, 0)

    async def _json(self, send: Send, status: int, body: dict[str, Any], extra: Headers | None = None) -> int:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(data)).encode()),
            *(extra or [])]})
        await send({"type": "http.response.body", "body": data})
        return status

    async def _error(self, send: Send, status: int, code: str, message: str, extra: Headers | None = None) -> int:
        return await self._json(send, status, {"error": {"code": code, "message": message}}, extra)

    async def _object(self, scope: Scope, send: Send, key: str) -> int:
        service = self.service
        found = service.cached(key)  # keys in the cache were validated when they were first looked up
        if found is None:
            try:
                found = await self._lookup(scope, key)
            except errors.PixelfoxError as exc:
                return await self._error(send, exc.http_status, exc.code, exc.message)
        raw_query = scope.get("query_string", b"")
        query = parse_qs(raw_query.decode("latin-1")) if raw_query else {}
        download = (query.get("download") or [""])[0]
        # a download name is only honoured signed: nobody else can name what this origin's files save as
        private = is_private_key(key) or (self.sign_originals and is_original_key(key)) or bool(download)
        if download and not disposition.is_download_name(download):
            return await self._error(send, 400, "bad-request", "download: not a plain file name",
                                     [(b"cache-control", PRIVATE.encode())])
        if private and not signing.verify(self.url_keys, key, (query.get("exp") or [None])[0],
                                          (query.get("sig") or [None])[0], download=download):
            return await self._error(send, 403, "forbidden", "a valid, unexpired signature is required",
                                     [(b"cache-control", PRIVATE.encode())])
        if found is None:
            return await self._error(send, 404, "not-found", "not found")
        info, local = found
        h = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
             if k in (b"if-none-match", b"if-modified-since", b"if-match", b"range", b"if-range")}
        headers: Headers = list(_object_headers(info, private))
        if download:
            headers.append((b"content-disposition", disposition.attachment(download).encode()))
        if h and precondition_failed(h, info):
            return await self._error(send, 412, "precondition-failed", "ETag does not match")
        if h and not_modified(h, info):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return 304
        start, count, status = 0, info.size, 200
        if h and range_applies(h, info):
            rng = byte_range(h["range"], info.size)
            if rng is None:
                return await self._error(send, 416, "range-not-satisfiable", "range not satisfiable", [
                    *[(k, v) for k, v in headers if k != b"cache-control"], (b"cache-control", b"no-store"),
                    (b"content-range", f"bytes */{info.size}".encode())])
            start, count = rng
            status = 206
            headers.append((b"content-range", f"bytes {start}-{start + count - 1}/{info.size}".encode()))
        headers.append((b"content-type", info.content_type.encode()))
        if service.accel_redirect and local is not None:
            return await self._accel(send, key, headers)
        headers.append((b"content-length", str(count).encode()))
        if scope["method"] == "HEAD":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return status
        if local is not None:
            return await self._send_local(send, key, local, status, headers, start, count)
        return await self._send_stream(send, key, status, headers, start, count)

    async def _lookup(self, scope: Scope, key: str) -> tuple[ObjectInfo, Path | None] | None:
        """Info and local path of ``key``; ``None`` when absent. Raises NotFound for what is not a
        valid key (percent-encoded, malformed, leaving the pool's root), like an absent one."""
        try:
            if b"%" in scope.get("raw_path", b""):
                raise errors.BadRequest()
            validate_key(key)
            return await self.service.lookup(key)
        except errors.BadRequest:
            raise errors.NotFound("not found") from None

    async def _accel(self, send: Send, key: str, headers: Headers) -> int:
        """Let nginx send the bytes: an empty answer naming the file under its ``internal`` location.

        Conditionals (304/412) were answered already; nginx serves ``Range`` from the file itself.
        nginx keeps ``Content-Type``, ``Content-Disposition``, ``Cache-Control`` and ``Accept-Ranges``
        from this answer; its location re-adds ``ETag``, ``Last-Modified`` and the security headers
        from ``$upstream_http_*`` (docs/storage.md has the location block).
        """
        target = self.service.accel_redirect.rstrip("/") + "/" + key
        out = [(k, v) for k, v in headers if k != b"content-range"]
        out += [(b"x-accel-redirect", target.encode()), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": b""})
        return 200

    async def _send_local(self, send: Send, key: str, path: Path, status: int, headers: Headers,
                          start: int, count: int) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            self.service.forget(key)
            return await self._error(send, 404, "not-found", "not found")
        try:
            if count <= INLINE_READ_BYTES:  # one read (page cache) and one body message
                data = os.pread(fd, count, start)
                if len(data) != count:
                    self.service.forget(key)
                    return await self._error(send, 404, "not-found", f"{key} changed on disk")
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": data})
                TALLY.sent += count
                return status
            await send({"type": "http.response.start", "status": status, "headers": headers})
            pos, end = start, start + count
            while pos < end:
                data = await asyncio.to_thread(os.pread, fd, min(STREAM_READ_BYTES, end - pos), pos)
                if not data:
                    raise ConnectionError(f"{key} shrank while being sent")
                pos += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": pos < end})
                TALLY.sent += len(data)
            return status
        finally:
            os.close(fd)

    async def _send_stream(self, send: Send, key: str, status: int, headers: Headers, start: int, count: int) -> int:
        """Stream from a non-local store (S3); the first chunk is read before the headers, so an object
        deleted meanwhile is still a clean 404."""
        chunks = aiter(self.service.store.open_range(key, start, count))
        try:
            first = await anext(chunks, b"")
        except errors.NotFound:
            self.service.forget(key)
            return await self._error(send, 404, "not-found", "not found")
        await send({"type": "http.response.start", "status": status, "headers": headers})
        sent = len(first)
        await send({"type": "http.response.body", "body": first, "more_body": sent < count})
        async for chunk in chunks:
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": sent < count})
        if sent < count:  # the store ended early: close the body (the client sees a short read)
            await send({"type": "http.response.body", "body": b""})
        TALLY.sent += sent
        return status


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0 = a free port), ``SO_REUSEPORT`` when several
    processes share the port. Raises OSError when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a node's own event loop: the node, not uvicorn, handles signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpOrigin:
    """Runs :class:`Origin` with uvicorn on an already-bound socket inside the running loop."""

    def __init__(self, app: Origin, sock: socket.socket) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        config = uvicorn.Config(
            app, loop="none", http="httptools", lifespan="off", access_log=False, log_config=None,
            server_header=False, timeout_keep_alive=30, timeout_graceful_shutdown=10,
        )
        self.server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> HttpOrigin:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self._task.done():
                await self._task  # raises what failed
                raise RuntimeError("the HTTP origin stopped during start-up")
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        """Stop accepting, let answers in flight finish (up to 10 s), close the socket."""
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        self.sock.close()
