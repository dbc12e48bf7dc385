"""Client addresses behind a trusted reverse proxy (``PIXELFOX_TRUSTED_PROXIES``): aiohttp-remotes'
``XForwardedStrict`` for one hop, whose refusals say why. A request that did not come through the
proxy, or that the proxy forwarded without (or with a forged) ``X-Forwarded-For``, is answered 400
with the reason in its body and logged at WARNING once per address, not at ERROR per request (the
library logged ``Too many X-Forwarded-For values ... expected 2`` when the header was missing)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from ipaddress import ip_address

from aiohttp import hdrs, web
from aiohttp_remotes import XForwardedStrict
from aiohttp_remotes.exceptions import UntrustedIP
from aiohttp_remotes.utils import check_ip, parse_trusted_element

logger = logging.getLogger(__name__)

#: paths answered whoever asks: the orchestrator's probes do not come through the proxy
HEALTH = ("/healthz", "/readyz")
_NOTED_MAX = 1024  # addresses remembered as already logged (then forgotten, and logged again)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ThroughProxy(XForwardedStrict):
    """``request.remote`` becomes the client address that one of ``trusted`` (addresses or networks,
    e.g. ``["10.0.0.0/8"]``) forwarded; any other request but :data:`HEALTH` is refused with 400.
    Raises ValueError for a malformed address."""

    def __init__(self, trusted: list[str]) -> None:
        super().__init__([trusted], white_paths=HEALTH)
        self._proxies = parse_trusted_element(trusted)  # the one hop's rules, parsed as the library does
        self._shown = ", ".join(trusted)
        self._noted: set[tuple[str, str]] = set()

    def refusal(self, request: web.Request) -> tuple[str, str, str] | None:
        """Why ``request`` is refused, as (peer address, kind, reason for the client); ``None`` when
        it came through the proxy with exactly the one hop the proxy set."""
        peer = str(request.transport.get_extra_info("peername")[0]) if request.transport else "?"
        try:
            check_ip(self._proxies, ip_address(peer))
        except (UntrustedIP, ValueError):
            return peer, "direct", (f"this site is served through its proxy; a request from {peer} "
                                    "did not come through it")
        hops = [h for v in request.headers.getall(hdrs.X_FORWARDED_FOR, []) for h in v.split(",") if h.strip()]
        if not hops:
            return peer, "no-header", (f"the proxy at {peer} forwarded this request without X-Forwarded-For "
                                       "(it must set it to the client's address: $remote_addr in nginx)")
        if len(hops) > 1:
            return peer, "hops", (f"X-Forwarded-For names {len(hops)} addresses; the proxy at {peer} must set "
                                  "it to the client's address only ($remote_addr in nginx), not add to one sent to it")
        return None

    def _note(self, request: web.Request, peer: str, kind: str, reason: str) -> None:
        """Log a refusal at WARNING the first time ``peer`` gets one of its ``kind``."""
        if (peer, kind) in self._noted:
            return
        if len(self._noted) >= _NOTED_MAX:
            self._noted.clear()
        self._noted.add((peer, kind))
        logger.warning("refused %s %s with 400: %s (PIXELFOX_TRUSTED_PROXIES: %s); further refusals of %s "
                       "for this reason are not logged", request.method, request.path, reason, self._shown, peer)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in HEALTH and (why := self.refusal(request)):
            self._note(request, *why)
            return web.Response(status=400, text=why[2] + "\n")
        return await super().middleware(request, handler)
