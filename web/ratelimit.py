"""Rate limits at the HTTP edge (only the web node sees client addresses).

Every budget goes through :func:`take`. Uploads (:func:`check_ip`): ``pixelfox:{limits}:ip:<address>``
counts the uploads a client starts (``POST /api/v1/images``, ``/api/v1/uploads``, ``/api/1/upload``),
``pixelfox:{limits}:anon-ip:<address>`` those without an account or API key; more than
``limits.ip_uploads_per_minute`` (default off) or ``limits.anonymous_ip_uploads_per_minute``
(default on: :data:`pixelfox.config.ANONYMOUS_IP_UPLOADS_PER_MINUTE`) in one minute gets 429
``rate-limited``. An upload the caller's own per-user limits refuse before its body is read is
given back (:func:`not_counted_if_over_user_limits`); a 401 for an unknown key stays counted.
Logins, registrations and reports have their own keys. :func:`take` (:mod:`pixelfox.ratelimit`,
shared with the manager, which spends the anonymous budget for ``CreateUpload`` calls made straight
to its gRPC port) checks and counts one attempt against one or more budgets in a single Lua script,
so parallel requests cannot all pass the check before any of them is counted. A budget of N per
window holds N attempts at once and refills one every window / N (GCRA, a sliding limit: N at the
end of one minute and N more at the start of the next are refused); its state lives at
``<key>:gcra`` (:func:`pixelfox.ratelimit.state_key`).

The address is ``request.remote``: behind a reverse proxy listed in ``PIXELFOX_TRUSTED_PROXIES``,
the client address that proxy forwarded (:func:`web.app.forwarded_for`); behind a proxy not listed
there, the proxy's, so every visitor shares one budget. Per-user limits (rate,
open uploads, quota) are the manager's (:mod:`nodes.manager.upload_limits`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from pixelfox import errors
from pixelfox.ratelimit import Budget, anonymous_budget, forget, give_back, spend, take
from web.keys import REDIS, SETTINGS

__all__ = ["check_ip", "forget", "give_back", "not_counted_if_over_user_limits", "retry_after", "take"]


def retry_after(response: web.StreamResponse, seconds: int) -> web.StreamResponse:
    response.headers["Retry-After"] = str(max(int(seconds), 1))
    return response


async def check_ip(request: web.Request, *, anonymous: bool) -> list[str]:
    """Count one upload started from the caller's address (``request.remote``) against its budgets;
    the keys it was counted on (for :func:`not_counted_if_over_user_limits`).

    Budgets, each N a minute (N at once, then one every 60 / N s): ``limits.ip_uploads_per_minute``
    for every caller and, when ``anonymous`` (no session, no API key),
    ``limits.anonymous_ip_uploads_per_minute`` too; 0 turns one off. Raises RateLimited (HTTP 429;
    ``retry_after_s``: seconds until one more upload fits the spent budget, 1 to 60 / N rounded up)
    and counts the upload against neither budget when one is spent; the anonymous budget's message
    says an account or API key gets more.
    """
    limits = request.app[SETTINGS].limits
    address = request.remote or "unknown"
    budgets = [Budget(f"pixelfox:{{limits}}:ip:{address}", limits.ip_uploads_per_minute)]
    if anonymous:  # first: when both are spent, its advice is the useful one
        budgets.insert(0, anonymous_budget(address, limits.anonymous_ip_uploads_per_minute))
    return await spend(request.app[REDIS], budgets)


#: refusals of a caller's own per-user upload limits (the manager's), which are not the address'
PER_USER_REFUSALS = (errors.RateLimited, errors.QuotaExceeded)  # TooManyOpenUploads is a RateLimited


@contextlib.asynccontextmanager
async def not_counted_if_over_user_limits(request: web.Request, counted: Sequence[str]) -> AsyncIterator[None]:
    """Around a check made before the body is read (``CheckUpload``, ``CreateUpload``): when it refuses
    the caller on their own per-user limits (429 rate-limited, too-many-open-uploads; 413 quota-exceeded),
    the upload :func:`check_ip` counted on ``counted`` is given back, so one user retrying does not
    use up the budget of everyone behind the same address. Anything else stays counted: a 401 for an
    unknown API key too, so that a flood of made-up keys stays bounded by the address' budget (given
    back, each one would cost the manager a key lookup with nothing to stop them)."""
    try:
        yield
    except PER_USER_REFUSALS:
        await give_back(request.app[REDIS], counted)
        raise
