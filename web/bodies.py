"""Request bodies on a web node: a body that stops arriving, and one caller sending many one-shot upload
bodies (``POST /api/v1/images``, ``/api/1/upload``) at once.

A request holds one of the node's request slots (:data:`web.__main__.CAPACITY`) while its body comes in;
a one-shot upload reads its body into a temp file before anything else happens. Without a bound, a client
that sends the headers and then a byte a minute (slowloris), or a script that opens a few hundred uploads
over a slow link, keeps those slots for as long as it likes. :func:`idle_watch` and :func:`body_slot`
bound both:

* **idle time** (``body_idle_s``, 60 s by default): no byte of the body for that long ends the read
  with 408 ``body-timeout``; a slow link that keeps sending is never cut (the watch counts bytes
  arriving, not the total time). Every other request with a body gets the same watch from
  :func:`body_idle_middleware` (a login form held open idle holds a slot as well);
* **bodies at once per caller** (``bodies_per_caller``, 8 by default, per web node): one more gets 429
  ``too-many-open-uploads`` before a byte of it is read, and before the address' upload budget is
  spent. The caller is the API key sent before the body, else the signed-in user, else the client
  address (:func:`caller_key`): a Chevereto key sent only in the form counts as its address.

Resumable uploads (tus) are not read here: they go to the upload nodes, which have their own stall
and open-upload limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator

from aiohttp import web
from aiohttp.typedefs import Handler

from pixelfox import errors
from web.keys import BODIES, SETTINGS


def caller_key(request: web.Request, api_key: str = "", user_id: str = "") -> str:
    """Whose bodies these are: ``key:<sha256 prefix of the API key>``, else ``user:<id>``, else
    ``addr:<client address>`` (``request.remote``, the forwarded one behind a trusted proxy)."""
    if api_key:
        return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]
    if user_id:
        return f"user:{user_id}"
    return f"addr:{request.remote or 'unknown'}"


@contextlib.contextmanager
def body_slot(request: web.Request, key: str) -> Iterator[None]:
    """Hold one of caller ``key``'s body slots (see :func:`caller_key`) on this node, from before any
    budget is spent (the refusal must not cost the address' upload budget, :mod:`web.ratelimit`) until
    the body is read. Raises TooManyOpenUploads (429, ``retry_after_s`` 1) at once when ``key`` already
    holds ``bodies_per_caller`` of them (0 = no cap)."""
    cap = request.app[SETTINGS].bodies_per_caller
    bodies = request.app[BODIES]
    if cap and bodies[key] >= cap:
        raise errors.TooManyOpenUploads(
            f"{bodies[key]} uploads from this caller are still sending their file to this server "
            f"(at most {cap} at once); wait for one to finish", retry_after_s=1)
    bodies[key] += 1
    try:
        yield
    finally:
        bodies[key] -= 1
        if bodies[key] <= 0:
            del bodies[key]


@contextlib.asynccontextmanager
async def idle_watch(request: web.Request) -> AsyncIterator[None]:
    """Around work that reads ``request``'s body: BodyTimeout (408) when no byte of it arrives for
    ``body_idle_s`` seconds while it is not complete. The work is cancelled, so its own cleanup
    (``finally``/``except``: temp files, semaphores) runs as for any other failed read."""
    idle_s = request.app[SETTINGS].body_idle_s
    task = asyncio.current_task()
    assert task is not None
    watch = asyncio.create_task(_watch(request, task, idle_s))
    try:
        yield
    except asyncio.CancelledError:
        if not (watch.done() and not watch.cancelled() and watch.result()):
            raise
        task.uncancel()
        raise errors.BodyTimeout(f"no byte of the request body arrived for {idle_s:g} s; the request was "
                                 "dropped (send it again)") from None
    finally:
        watch.cancel()


#: routes whose handlers watch their own body (:func:`idle_watch` inside :func:`body_slot`): the one-shot
#: uploads, which answer a 408 in their own shape (Chevereto's) and free their slot with it
WATCHED_BY_HANDLER = frozenset({"api_upload", "chevereto_upload"})


@web.middleware
async def body_idle_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """:func:`idle_watch` around every other request that has a body (login, registration, forms, the
    JSON API): a client that declares a body and stops sending it held a request slot for good."""
    if not request.body_exists or request.match_info.route.name in WATCHED_BY_HANDLER:
        return await handler(request)
    async with idle_watch(request):
        return await handler(request)


async def _watch(request: web.Request, reader: asyncio.Task[object], idle_s: float) -> bool:
    """Cancel ``reader`` once ``request``'s body got no byte for ``idle_s`` s before its end; True if
    it did. Bytes are counted as they arrive from the network (``StreamReader.total_bytes``)."""
    content = request.content
    loop = asyncio.get_running_loop()
    seen, since = content.total_bytes, loop.time()
    step = min(1.0, idle_s / 4)
    while not content.is_eof():
        await asyncio.sleep(step)
        if content.total_bytes != seen:
            seen, since = content.total_bytes, loop.time()
        elif loop.time() - since >= idle_s and not content.is_eof():
            reader.cancel()
            return True
    return False
