"""One-shot upload bodies (``POST /api/v1/images``, ``/api/1/upload``): a body that stops arriving,
and one caller holding many bodies open at once.

A web node reads such a body into a temp file before anything else happens, and holds one of its
request slots (:data:`web.__main__.CAPACITY`) meanwhile. Without a bound, a client that sends the
headers and then a byte a minute (slowloris), or a script that opens a few hundred uploads over a
slow link, keeps those slots for as long as it likes. :func:`receiving` bounds both:

* **idle time** (``body_idle_s``, 60 s by default): no byte of the body for that long ends the read
  with 408 ``body-timeout``; a slow link that keeps sending is never cut (the watch counts bytes
  arriving, not the total time);
* **bodies at once per caller** (``bodies_per_caller``, 8 by default, per web node): one more gets 429
  ``too-many-open-uploads`` before a byte of it is read. The caller is the API key, else the
  signed-in user, else the client address (:func:`caller_key`).

Resumable uploads (tus) are not read here: they go to the upload nodes, which have their own stall
and open-upload limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

from aiohttp import web

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


@contextlib.asynccontextmanager
async def receiving(request: web.Request, key: str) -> AsyncIterator[None]:
    """Around the read of ``request``'s body by caller ``key`` (see :func:`caller_key`).

    Raises TooManyOpenUploads (429, ``retry_after_s`` 1) at once when ``key`` already has
    ``bodies_per_caller`` bodies being read on this node (0 = no cap), and BodyTimeout (408) when no
    byte arrives for ``body_idle_s`` seconds while the body is not complete: the read is cancelled,
    so the caller's temp file handling (``finally``/``except``) runs as for any other failed read.
    """
    settings = request.app[SETTINGS]
    bodies = request.app[BODIES]
    cap = settings.bodies_per_caller
    if cap and bodies[key] >= cap:
        raise errors.TooManyOpenUploads(
            f"{bodies[key]} uploads from this caller are still sending their file to this server "
            f"(at most {cap} at once); wait for one to finish", retry_after_s=1)
    bodies[key] += 1
    task = asyncio.current_task()
    assert task is not None
    watch = asyncio.create_task(_watch(request, task, settings.body_idle_s))
    try:
        yield
    except asyncio.CancelledError:
        if not (watch.done() and not watch.cancelled() and watch.result()):
            raise
        task.uncancel()
        raise errors.BodyTimeout(f"no byte of the request body arrived for {settings.body_idle_s:g} s; the upload "
                          "was dropped (send it again)") from None
    finally:
        watch.cancel()
        bodies[key] -= 1
        if bodies[key] <= 0:
            del bodies[key]


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
