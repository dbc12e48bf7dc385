"""A web node behind a trusted proxy (``PIXELFOX_TRUSTED_PROXIES``) refuses a request that bypassed
the proxy with a 400 that says why, and logs it once at WARNING: it answered a bare ``400: Bad
Request`` and logged ``ERROR ... Too many X-Forwarded-For values ... expected 2`` per request. A real
web node of the shared cluster; the "proxy" is a client bound to 127.0.0.2."""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PROXY = "127.0.0.2"


def _get(url: str, path: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None) -> tuple[int, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_a_request_that_bypasses_the_proxy_is_told_why(cluster: Any) -> None:
    cluster.local.role_env["webproxied"] = {"PIXELFOX_TRUSTED_PROXIES": PROXY}
    url = cluster.start_web("webproxied")
    try:
        direct = "this site is served through its proxy; a request from 127.0.0.1 did not come through it\n"
        assert [_get(url, "/") for _ in range(3)] == [(400, direct)] * 3
        assert _get(url, "/login", source=PROXY) == (400, (
            f"the proxy at {PROXY} forwarded this request without X-Forwarded-For (it must set it to the "
            "client's address: $remote_addr in nginx)\n"))
        forged = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
        assert _get(url, "/login", source=PROXY, headers=forged) == (400, (
            f"X-Forwarded-For names 2 addresses; the proxy at {PROXY} must set it to the client's address only "
            "($remote_addr in nginx), not add to one sent to it\n"))
        assert _get(url, "/login", source=PROXY, headers={"X-Forwarded-For": "203.0.113.9"})[0] == 200
        assert _get(url, "/healthz")[0] == 200  # probes come straight from the orchestrator
        cluster.local.terminate("webproxied")
        log = cluster.local.child("webproxied").log.read_text()
        assert log.count(f"WARNING web.proxied: refused GET / with 400: {direct.strip()} "
                         f"(PIXELFOX_TRUSTED_PROXIES: {PROXY}); further refusals") == 1, log
        assert "aiohttp_remotes" not in log and "ERROR" not in log, log
    finally:
        cluster.local.terminate("webproxied")
        cluster.local.web_urls.remove(url)
        del cluster.local.role_env["webproxied"]
