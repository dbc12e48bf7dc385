"""The web node's middlewares: one error middleware, security headers, in-flight counting.

Order in the app (outermost first): ``headers`` → ``errors`` → aiohttp-session → handler.
The error middleware turns :class:`~pixelfox.errors.PixelfoxError` into
``{"error": {"code", "message"}}`` with its ``http_status`` on API routes and into an HTML
error page elsewhere; anything else becomes a generic 500 and its traceback goes to the log.
An ``AccountDisabled`` answer also ends the request's session (its user was disabled by an admin),
and a plain ``Unauthenticated`` ("not logged in") to a browser whose session ended that way is
answered as ``AccountDisabled`` (:func:`web.sessions.session_ended`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import aiohttp_jinja2
import redis.exceptions
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import Counter, Histogram
from yarl import URL

from pixelfox import errors
from pixelfox.session_index import ACCOUNT_DISABLED
from web.accept import prefers_html
from web.keys import STATE
from web.sessions import logout, session_ended
from web.views.common import origin_of

logger = logging.getLogger(__name__)

REQUESTS = Counter("pixelfox_web_requests_total", "HTTP requests answered", ["route", "code"])
LATENCY = Histogram("pixelfox_web_request_duration_seconds", "HTTP request latency", ["route"])

CSP = (
    "default-src 'self'; img-src * data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def csp_connecting_to(urls: list[str]) -> str:
    """:data:`CSP` with the origins of the absolute http(s) ``urls`` added to ``connect-src``."""
    origins = sorted({origin_of(URL(u)) for u in urls if u.startswith(("http:", "https:"))} - {""})
    return CSP.replace("connect-src 'self'", " ".join(["connect-src 'self'", *origins]))


def is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/readyz", "/oembed")


def _visited_in_a_browser(request: web.Request) -> bool:
    """A deletion link (an API path people open from an upload answer) asked for by a browser."""
    return request.path.startswith("/api/v1/delete/") and prefers_html(request)


def error_response(request: web.Request, status: int, code: str, message: str) -> web.StreamResponse:
    """The error as JSON ``{"error": {code, message}}`` on API paths (a deletion link opened in a
    browser aside), else as the HTML error page. A deletion link's answer says ``Vary: Accept``: a
    cache must not hand a browser the JSON a program was given."""
    response: web.StreamResponse
    if is_api(request) and not _visited_in_a_browser(request):
        response = web.json_response({"error": {"code": code, "message": message}}, status=status)
    else:
        ctx: dict[str, Any] = {"status": status, "code": code, "message": message}
        response = aiohttp_jinja2.render_template("error.html", request, ctx, status=status)
    if request.path.startswith("/api/v1/delete/"):
        response.headers["Vary"] = "Accept"
    return response


def _http_code(exc: web.HTTPException) -> str:
    return {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
        exc.status, f"http-{exc.status}"
    )


#: seconds a 503 asks clients to wait (RFC 9110 §10.2.3): node timeouts and restarts take about that
UNAVAILABLE_RETRY_AFTER_S = 5

#: status recorded for a request whose client disconnected before the answer (nginx's 499)
CLIENT_CLOSED = 499

def pixelfox_error_response(request: web.Request, exc: errors.PixelfoxError) -> web.StreamResponse:
    """``exc`` as an answer: a 5xx keeps peer and transport detail in the log and says its class's
    ``default_message``, unless its message is :attr:`~pixelfox.errors.PixelfoxError.public` (the
    manager's ``NoNodeAvailable`` naming the missing role, a ``Timeout.no_answer`` hint); 429 and 503
    carry ``Retry-After``."""
    message = exc.message
    if exc.http_status >= 500:
        logger.warning("%s %s: %s (%s)", request.method, request.path, exc.code, exc)
        if not exc.public:
            message = type(exc).default_message
    response = error_response(request, exc.http_status, exc.code, message)
    if isinstance(exc, errors.RateLimited) and exc.retry_after_s:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, errors.Unavailable):
        response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_S)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.AccountDisabled as exc:  # an admin disabled the session's user: the session ends now
        with contextlib.suppress(redis.exceptions.RedisError):
            await logout(request, ACCOUNT_DISABLED)
        return pixelfox_error_response(request, exc)
    except errors.PixelfoxError as exc:
        if type(exc) is errors.Unauthenticated and session_ended(request) == ACCOUNT_DISABLED:
            exc = errors.AccountDisabled()  # "not logged in", because an admin disabled the account
        return pixelfox_error_response(request, exc)
    except redis.exceptions.RedisError:
        logger.exception("redis failed on %s %s", request.method, request.path)
        exc2 = errors.Unavailable("session store unavailable, try again")
        return error_response(request, exc2.http_status, exc2.code, exc2.message)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.empty_body:
            raise
        return error_response(request, exc.status, _http_code(exc), exc.reason)
    except (HttpProcessingError, RequestPayloadError):  # the body cannot be read: bad Content-Encoding...
        # answered here, so the body is over: aiohttp's lingering read of an unread body would raise the
        # same error again after the answer and log it as an unhandled exception, with its traceback
        request.content.feed_eof()
        response = error_response(request, 400, "bad-request",
                                  "the request body cannot be read (bad encoding or framing)")
        response.force_close()  # the rest of that body on the connection is no next request
        return response
    except UnicodeError:  # undecodable bytes in a header, field or file name, or a lone surrogate in JSON
        return error_response(request, 400, "bad-request", "the request holds text that is not valid UTF-8")
    except LookupError as exc:
        if type(exc) is not LookupError:  # KeyError/IndexError are bugs, not bad input
            raise
        return error_response(request, 400, "bad-request", "the request names an unknown charset")
    except ConnectionResetError:  # the client went away mid-body (aiohttp's ClientConnectionResetError)
        logger.info("client closed the connection during %s %s", request.method, request.path)
        # nobody reads this answer; 499 (nginx's "client closed request") keeps it out of the 5xx rates
        return error_response(request, CLIENT_CLOSED, "client-closed", "the client closed the connection")
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, 500, "internal", "internal error")


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    state.in_flight += 1
    route = request.match_info.route.name or ("static" if request.path.startswith("/static/") else "other")
    code = 500
    try:
        with LATENCY.labels(route).time():
            response = await handler(request)
        code = response.status
    except web.HTTPException as exc:
        code = exc.status
        _secure(exc)
        raise
    finally:
        state.in_flight -= 1
        REQUESTS.labels(route, str(code)).inc()
    _secure(response)
    return response


def _secure(response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Frame-Options", "DENY")
