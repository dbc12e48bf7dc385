"""tus 1.0.0 on the upload node's HTTP port: core, creation, termination, checksum, expiration.

Routes (``/tus/`` is the creation URL, also without its slash; ``/tus/<upload id>`` is the ``upload_url`` the manager
hands out, so clients that know it skip creation):

* ``OPTIONS`` — ``Tus-Version``, ``Tus-Extension``, ``Tus-Max-Size``, ``Tus-Checksum-Algorithm``.
* ``POST /tus/`` with ``Upload-Length`` — the upload named by the ticket; ``201`` + ``Location``. A malformed
  ``Upload-Metadata`` is a 400 (:mod:`nodes.upload.tusmeta`).
* ``HEAD /tus/<id>`` — ``Upload-Offset``, ``Upload-Length``, ``Upload-Expires``, ``no-store``.
* ``PATCH /tus/<id>`` — ``application/offset+octet-stream`` at ``Upload-Offset``; ``204`` with
  the new offset. The PATCH that reaches ``Upload-Length`` stores and completes the upload
  before answering (headers ``Pixelfox-Image-Slug`` and ``Pixelfox-Deduplicated: true|false``, true
  when the user already had these bytes and the upload became that image, unchanged; ``Pixelfox-Note``
  when that image is private, :func:`pixelfox.client.images.private_duplicate_note`). With
  ``Upload-Checksum`` (sha1, md5, sha256, crc32c) the body is committed only when it matches, else ``460``.
  ``Upload-Length`` on a PATCH, meant for deferred lengths (refused at creation), must be the upload's (400).
* ``DELETE /tus/<id>`` — termination: staged bytes removed, state closed, ``204``; then ``404`` saying it was
  cancelled (a second DELETE: "nothing to cancel: the upload was already cancelled").
* ``POST /tus/<id>`` with ``X-HTTP-Method-Override: PATCH`` or ``DELETE`` — as that method.

Every request but OPTIONS carries ``Authorization: Bearer <ticket>`` (401 with the reason
otherwise) and ``Tus-Resumable: 1.0.0`` (412 otherwise); a header read as one value
(:data:`SINGLE_HEADERS`) sent twice is a 400 naming it. State is the shared Redis state of
:mod:`pixelfox.uploadstate`, so any upload node takes the next PATCH. CORS answers any
origin (the credential is the ticket in a header, never a cookie) and exposes the tus headers.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable
from email.utils import formatdate

import google_crc32c
from aiohttp import web

from nodes.upload.service import Chunk, Receiver, Session
from nodes.upload.tusmeta import parse_upload_metadata
from pixelfox import errors, tickets
from pixelfox.client.images import NOTE_HEADER, private_duplicate_note
from pixelfox.numbers import MAX_DIGITS, ascii_int, is_ascii_digits
from pixelfox.schemes import refuse_repeated, split_scheme
from pixelfox.uploadstate import nothing_to_cancel

logger = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,termination,checksum,expiration"
CHECKSUMS: dict[str, Callable[[bytes], bytes]] = {
    "sha1": lambda b: hashlib.sha1(b).digest(),
    "md5": lambda b: hashlib.md5(b).digest(),
    "sha256": lambda b: hashlib.sha256(b).digest(),
    "crc32c": lambda b: google_crc32c.value(b).to_bytes(4, "big"),
}
MAX_CHECKED_BODY = 32 * 1024 * 1024  # a PATCH with Upload-Checksum is held until verified: cap it
TUS_HEADERS = ("Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Upload-Checksum, Upload-Defer-Length, "
               "Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, Location, "
               "Pixelfox-Image-Slug, Pixelfox-Deduplicated, " + NOTE_HEADER)
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, HEAD, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Requested-With, X-HTTP-Method-Override, "
                                    + TUS_HEADERS,
    "Access-Control-Expose-Headers": TUS_HEADERS,
    "Access-Control-Max-Age": "86400",
}
#: headers read as one value: sent twice, the request is a 400 naming the header (not the first taken)
SINGLE_HEADERS = ("Tus-Resumable", "Authorization", "Upload-Offset", "Upload-Length", "Upload-Checksum",
                  "X-HTTP-Method-Override")
#: tus answers that differ from the error tree's HTTP status
TUS_STATUS = {errors.UploadBusy: 423, errors.ChecksumMismatch: 460}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _ticket(request: web.Request) -> str:
    """The ticket of ``Authorization: Bearer <ticket>``; the scheme is case-insensitive (RFC 9110
    §11.1: ``bearer`` and ``BEARER`` are the same) and any whitespace may follow it."""
    scheme, token = split_scheme(request.headers.get("Authorization", ""))
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthenticated("tus requests need 'Authorization: Bearer <upload ticket>'")
    return token


def _int_header(request: web.Request, name: str) -> int:
    value = ascii_int(request.headers.get(name, ""))
    if value is None:
        raise errors.BadRequest(f"{name} must be a non-negative integer of at most {MAX_DIGITS} digits")
    return value


@web.middleware
async def tus_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tus-Resumable check, repeated :data:`SINGLE_HEADERS` refused, CORS and tus headers on every
    answer, errors as JSON with tus statuses."""
    if request.path != "/tus" and not request.path.startswith("/tus/"):
        return await handler(request)
    base = {"Tus-Resumable": TUS_VERSION, **CORS}
    try:
        if request.method != "OPTIONS":
            refuse_repeated(request.headers, SINGLE_HEADERS)
            if request.headers.get("Tus-Resumable") != TUS_VERSION:
                return web.json_response(
                    {"error": {"code": "tus-version", "message": "Tus-Resumable 1.0.0 required"}},
                    status=412, headers={**base, "Tus-Version": TUS_VERSION})
        resp = await handler(request)
    except ConnectionResetError:  # the client went away mid-PATCH: what arrived is kept, HEAD resumes it
        logger.info("tus %s %s: the client closed the connection", request.method, request.path)
        resp = web.Response(status=499)  # nginx's "client closed request"; nobody reads it
    except errors.PixelfoxError as exc:
        status = next((s for cls, s in TUS_STATUS.items() if isinstance(exc, cls)), exc.http_status)
        resp = web.json_response({"error": exc.to_dict()}, status=status)
    except web.HTTPException as exc:  # aiohttp's own (405, 404 route, 415): the code names the status
        code = exc.reason.lower().replace(" ", "-")  # "Unsupported Media Type" -> unsupported-media-type
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}  # a 405 names the methods
        resp = web.json_response({"error": {"code": code, "message": exc.text or exc.reason}}, status=exc.status,
                                 headers=allow)
    resp.headers.update(base)
    return resp


class Tus:
    """The tus handlers over one :class:`~nodes.upload.service.Receiver`."""

    def __init__(self, receiver: Receiver, public_url: str, max_size: int) -> None:
        self.rx = receiver
        self.public_url = public_url.rstrip("/")
        self.max_size = max_size

    def routes(self) -> list[web.RouteDef]:
        return [
            web.options("/tus/", self.options), web.options("/tus", self.options),
            web.options("/tus/{id}", self.options),
            # clients configured with the endpoint without its slash (tuspy, Uppy) create at /tus
            web.post("/tus/", self.create), web.post("/tus", self.create), web.head("/tus/{id}", self.head),
            web.patch("/tus/{id}", self.patch), web.delete("/tus/{id}", self.delete),
            web.post("/tus/{id}", self.overridden),
        ]

    async def overridden(self, request: web.Request) -> web.StreamResponse:
        """``POST /tus/<id>`` with ``X-HTTP-Method-Override: PATCH`` (or ``DELETE``), for clients
        behind proxies that refuse those methods (tus 1.0.0, "X-HTTP-Method-Override"; tus-js-client's
        ``overridePatchMethod``): answered as that method. Anything else is a 405."""
        method = request.headers.get("X-HTTP-Method-Override", "").strip().upper()
        if method == "PATCH":
            return await self.patch(request)
        if method == "DELETE":
            return await self.delete(request)
        raise web.HTTPMethodNotAllowed("POST", ["HEAD", "PATCH", "DELETE", "OPTIONS", "POST"],
                                       text="POST to an upload URL needs X-HTTP-Method-Override: PATCH or DELETE")

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            "Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS, "Tus-Max-Size": str(self.max_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS)})

    async def _expires(self, upload_id: str, usable_until: float) -> dict[str, str]:
        """``Upload-Expires`` (tus expiration): when nothing can resume the upload any more, the
        earlier of its state's expiry and its ticket's end (``usable_until``, of the ticket the
        request was checked with: :func:`pixelfox.tickets.usable_until`), as ``GET /api/v1/uploads/<id>``
        says; it gave the state's, up to an hour past the ticket."""
        ends = [await self.rx.states.ttl(upload_id), usable_until]
        end = min((e for e in ends if e > 0), default=0.0)
        return {"Upload-Expires": formatdate(end, usegmt=True)} if end else {}

    async def create(self, request: web.Request) -> web.Response:
        token = _ticket(request)
        if request.headers.get("Upload-Defer-Length"):
            raise errors.BadRequest("Upload-Defer-Length is not supported: the ticket fixes the size")
        # checked, not used: the ticket carries the file name and title (a comma-separated list, so
        # two headers are one list, and a key in both is sent twice)
        parse_upload_metadata(",".join(v for v in request.headers.getall("Upload-Metadata", ()) if v.strip()))
        raw = request.headers.get("Upload-Length", "")
        if is_ascii_digits(raw, len(raw)) and len(raw.lstrip("0")) > MAX_DIGITS:  # more than any Tus-Max-Size
            raise errors.PayloadTooLarge(f"Upload-Length {raw} is over Tus-Max-Size {self.max_size}")
        size = _int_header(request, "Upload-Length")
        if size > self.max_size:
            raise errors.PayloadTooLarge(f"Upload-Length {size} is over Tus-Max-Size {self.max_size}")
        ticket = tickets.verify(self.rx.ticket_key, token, leeway_s=self.rx.limits.ticket_leeway_s)
        self.rx.check_ticket(token, ticket.upload_id, size)
        st = await self.rx.state(ticket)
        if st.status == "complete":  # a ticket is good for one upload
            raise errors.InvalidTicket(f"upload ticket already used: the upload is complete (image {st.slug})")
        return web.Response(status=201, headers={
            "Location": f"{self.public_url}/tus/{st.upload_id}", "Upload-Offset": str(st.offset),
            **await self._expires(st.upload_id, self.rx.usable_until(ticket))})

    async def head(self, request: web.Request) -> web.Response:
        ticket = self.rx.check_ticket(_ticket(request), request.match_info["id"])
        st = await self.rx.state(ticket)
        return web.Response(status=200, headers={
            "Upload-Offset": str(st.offset), "Upload-Length": str(st.size), "Cache-Control": "no-store",
            **({"Pixelfox-Image-Slug": st.slug} if st.slug else {}),
            **await self._expires(st.upload_id, self.rx.usable_until(ticket))})

    async def patch(self, request: web.Request) -> web.Response:
        token, upload_id = _ticket(request), request.match_info["id"]
        if request.content_type != "application/offset+octet-stream":
            raise web.HTTPUnsupportedMediaType(text="Content-Type must be application/offset+octet-stream")
        offset = _int_header(request, "Upload-Offset")
        check = self._checksum(request.headers.get("Upload-Checksum", ""))
        st = await self.rx.query(token, upload_id)
        if st.status == "complete":  # said before any size check: the upload is done, not too long
            raise errors.InvalidTicket(f"upload ticket already used: the upload is complete (image {st.slug})")
        if "Upload-Length" in request.headers and _int_header(request, "Upload-Length") != st.size:
            # tus 1.0: Upload-Length on a PATCH only sets a deferred length, which creation refuses
            raise errors.BadRequest(f"Upload-Length {request.headers['Upload-Length']} differs from the upload's "
                                    f"{st.size} bytes: the length is fixed at creation")
        if offset != st.offset:  # before the size check: a body at the wrong offset is a conflict (409), not too long
            raise errors.OffsetMismatch(f"Upload-Offset {offset}; committed offset is {st.offset}")
        if request.content_length is not None and offset + request.content_length > st.size:
            # refused before reading: nothing of this body is committed (tus core, "413 when the
            # body would exceed Upload-Length"); a chunked body is cut at the first piece past it
            raise errors.PayloadTooLarge(f"Upload-Offset {offset} + Content-Length {request.content_length} "
                                         f"is past Upload-Length {st.size}")
        session = await self.rx.open(token, upload_id, st.size)
        try:
            if offset != session.offset:
                raise errors.OffsetMismatch(f"Upload-Offset {offset}; committed offset is {session.offset}")
            try:
                await self._body(request, session, check)
            except errors.PayloadTooLarge as exc:  # a chunked body past Upload-Length: say what is kept
                await session.flush()  # bytes held for an unverified checksum are not kept
                kept = session.committed
                said = errors.PayloadTooLarge(f"{exc.message}; {kept} bytes are kept, HEAD for the offset")
                return web.json_response({"error": said.to_dict()}, status=said.http_status,
                                         headers={"Upload-Offset": str(kept)})
            await session.flush()  # the answer's Upload-Offset is what Redis holds
            extra: dict[str, str] = {}
            if session.offset == st.size:
                reply = await session.finish()
                extra["Pixelfox-Image-Slug"] = reply.image.slug
                extra["Pixelfox-Deduplicated"] = "true" if reply.deduplicated else "false"
                if note := private_duplicate_note(reply.image, reply.deduplicated):
                    extra[NOTE_HEADER] = note  # as Chevereto's format=txt says it: the links open only for the owner
            return web.Response(status=204, headers={"Upload-Offset": str(session.offset), **extra,
                                                     **await self._expires(upload_id, session.usable_until)})
        finally:
            await session.close()

    def _checksum(self, raw: str) -> tuple[Callable[[bytes], bytes], bytes] | None:
        if not raw:
            return None
        alg, value = split_scheme(raw)  # "<algorithm> <base64>": the shape of a scheme and its value
        if alg.lower() not in CHECKSUMS:
            # tus checksum extension: an unsupported algorithm is a 400; a name is short, anything else is not echoed
            named = f" (got {alg!r})" if len(alg) <= 20 and alg.isascii() and alg.isprintable() else ""
            raise errors.BadRequest(f"Upload-Checksum must be '<algorithm> <base64 digest>' with algorithm one of "
                                    f"{', '.join(CHECKSUMS)}{named}")
        alg = alg.lower()
        fn = CHECKSUMS[alg]
        try:
            digest = base64.b64decode(value.strip(), validate=True)
        except ValueError as exc:
            raise errors.BadRequest("Upload-Checksum value is not base64") from exc
        if len(digest) != len(fn(b"")):  # also an empty value: "sha1" alone is a malformed header, not a mismatch
            raise errors.BadRequest(f"Upload-Checksum needs '{alg} <base64 of the {len(fn(b''))}-byte digest>'")
        return fn, digest

    async def _body(self, request: web.Request, session: Session, check: tuple[Callable[[bytes], bytes], bytes] | None
                    ) -> None:
        """Write the PATCH body in ``chunk_size`` pieces; with a checksum, commit only if it matches."""
        piece = self.rx.limits.chunk_size
        start = session.offset
        held = bytearray()  # the whole body when checked (bounded), else one piece
        buf = bytearray()
        try:
            while data := await request.content.read(piece):
                buf += data
                if session.offset + len(buf) > session.header.size:
                    # a chunked body running past Upload-Length: the piece that crosses it is not
                    # written; earlier pieces stay (as for a cut connection; HEAD tells the offset)
                    buf.clear()
                    raise errors.PayloadTooLarge(f"the body runs past Upload-Length {session.header.size}")
                if check is not None:
                    held += data
                    if len(held) > MAX_CHECKED_BODY:
                        raise errors.PayloadTooLarge(f"a PATCH with Upload-Checksum may carry {MAX_CHECKED_BODY} "
                                                     "bytes at most")
                if len(buf) >= piece:
                    # taken from buf before the write: a piece the write refuses (not an image...)
                    # must not be written again by the finally below
                    taken, buf = bytes(buf), bytearray()
                    await session.write(Chunk(session.offset, taken, None), commit=check is None)
        finally:  # a cut connection keeps what arrived (unless it must be checked first)
            if buf and check is None:
                await session.write(Chunk(session.offset, bytes(buf), None))
        if check is not None:
            if buf:
                await session.write(Chunk(session.offset, bytes(buf), None), commit=False)
            fn, want = check
            if fn(bytes(held)) != want:
                raise errors.ChecksumMismatch("Upload-Checksum does not match the PATCH body; it was discarded")
            await session.commit()
        logger.debug("PATCH %s: %d -> %d", session.header.upload_id, start, session.offset)

    async def delete(self, request: web.Request) -> web.Response:
        """tus termination: ``204``; ``404`` for an upload already cancelled (here or by its owner:
        ``DELETE /api/v1/uploads/<id>``, whose ticket is otherwise refused with a 401)."""
        token, upload_id = _ticket(request), request.match_info["id"]
        ticket = self.rx.check_ticket(token, upload_id)
        cancelled = await self.rx.states.get(upload_id)
        if cancelled is not None and cancelled.status == "abandoned":
            raise errors.NotFound(nothing_to_cancel("abandoned"))
        st = await self.rx.state(ticket)
        session = await self.rx.open(token, upload_id, st.size)
        try:
            await self.rx.terminate(token, upload_id)
        finally:
            await session.close()
        return web.Response(status=204)


def make_app(receiver: Receiver, public_url: str, ready: Callable[[], bool]) -> web.Application:
    """The upload node's HTTP app: tus under ``/tus/``, ``/healthz`` (the process answers: plain
    ``ok``) and ``/readyz``: 200 ``{"status": "ready"}`` while ``ready()`` (the node's gRPC health:
    its manager and Redis reachable, not draining), else 503 ``{"status": "not-ready"}``, as the
    storage node's."""
    app = web.Application(middlewares=[tus_middleware], client_max_size=1024**2)
    tus = Tus(receiver, public_url, receiver.limits.max_upload_bytes)
    app.add_routes(tus.routes())

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"status": "ready" if ok else "not-ready"}, status=200 if ok else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
