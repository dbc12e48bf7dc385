"""``Expect: 100-continue`` on the one-shot upload routes: the interim ``100 Continue`` is sent by the
handler once the checks it makes from the headers pass, so a refusal (401, 413, 429...) is the answer
a waiting client gets instead, and no byte of the body is sent.

aiohttp's default expect handler answers ``100 Continue`` before the handler runs: curl, which sends
``Expect: 100-continue`` for a body over 1 MiB, then pushed megabytes of a body that was going to be
refused from its headers. :func:`continue_from_handler` (the routes' ``expect_handler``) only checks
the expectation (any other is a 417, as aiohttp's) and notes that one is owed; the handler calls
:func:`send_continue` just before it reads the body. The refusal is so the handler's own answer,
through the middlewares (its error shape, ``Retry-After``, security headers, the client address
behind a trusted proxy, the session), and every check runs once: an expect handler runs outside the
middlewares, and checks made there would have counted the address' upload budget a second time.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

#: set on a request whose client waits for ``100 Continue`` before sending its body (copied to the
#: clones middlewares make, e.g. for the client address behind a proxy)
CONTINUE_OWED = web.RequestKey("continue_owed", bool)


async def continue_from_handler(request: web.Request) -> None:
    """``expect_handler`` of a route whose handler calls :func:`send_continue` before reading the body.

    As aiohttp's default handler: on HTTP/1.1, ``Expect: 100-continue`` (any case) is answered, any
    other expectation is a 417 ``Unknown Expect``; HTTP/1.0 is left alone. The 100 is not sent here."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version == HttpVersion11:
        if expect.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
        request[CONTINUE_OWED] = True


async def send_continue(request: web.Request) -> None:
    """Send the ``100 Continue`` the client waits for, if it asked for one (once): call it after the
    checks made from the headers and before reading the body (a client may wait for it for ever)."""
    if request.get(CONTINUE_OWED):
        request[CONTINUE_OWED] = False
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's: the response's size starts after the interim one
        await request.writer.drain()
