"""Channels to several servers of one kind (managers), and client-side gRPC metrics.

``PIXELFOX_CLUSTER__MANAGER=10.0.0.1:7070,10.0.0.2:7070`` gives every node and client a
channel over all managers: gRPC's ``round_robin`` policy spreads calls over the ones that
are connected and stops using one as soon as its connection breaks (keepalive sees a
silent one within 15 s); a unary call that fails ``UNAVAILABLE`` is retried up to twice,
which lands it on a live manager (the gRPC retry policy, gRFC A6). Host names are resolved
once when the channel is built; a ``dns:///name:port`` target (a Kubernetes headless
Service: one record per manager pod) is re-resolved by gRPC and balanced the same way.
A frozen manager keeps its connections open and is not left out by this channel: nodes route
their calls by heartbeats over one channel per manager (:mod:`pixelfox.managerlink`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

CLIENT_HANDLED = Counter(
    "grpc_client_handled_total", "unary RPCs completed, client side", ["grpc_service", "grpc_method", "grpc_code"]
)
CLIENT_SECONDS = Histogram(
    "grpc_client_handling_seconds", "unary RPC time seen by the client (s)", ["grpc_service", "grpc_method"]
)

RETRY_MAX_ATTEMPTS = 3  # one try plus two retries: enough to get past one or two dead managers


def _split(address: str) -> tuple[str, str]:
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]"), port


def _literal(host: str) -> str:
    """``host`` as an IPv4 literal (resolving names once); IPv6 literals are kept in brackets."""
    try:
        ip = ipaddress.ip_address(host)
        return str(ip) if ip.version == 4 else f"[{ip}]"
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:  # its own words ("Name or service not known") do not say which name
        raise OSError(f"cannot resolve the host name {host!r}: {exc.strerror}") from exc
    return str(infos[0][4][0])


def service_config(services: list[str] | None = None) -> str:
    """The JSON service config: round-robin plus a retry on ``UNAVAILABLE`` for ``services`` (default: all)."""
    names = [{"service": s} for s in services] if services else [{}]
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{
            "name": names,
            "retryPolicy": {
                "maxAttempts": RETRY_MAX_ATTEMPTS, "initialBackoff": "0.1s", "maxBackoff": "1s",
                "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }],
    })


def addresses(address: str) -> list[str]:
    """The ``host:port`` entries of a comma-separated ``address`` (one entry for one address or a ``dns:`` target)."""
    if address.startswith("dns:"):
        return [address]
    return [a.strip() for a in address.split(",") if a.strip()] or [address]


def target(address: str) -> tuple[str, list[tuple[str, Any]]]:
    """The gRPC target and extra channel options for ``address`` (one or several ``host:port``, comma-separated).

    One address is returned unchanged with no options; a ``dns:`` target keeps its name and
    gets the round-robin/retry config. Several addresses become an ``ipv4:`` (or
    ``ipv6:``) target list with the :func:`service_config` above. Raises ``OSError`` when a
    host name does not resolve.
    """
    if address.startswith("dns:"):  # one name, several records (a headless Service): balance over them
        return address, [("grpc.service_config", service_config())]
    parts = addresses(address)
    if len(parts) <= 1:
        return parts[0], []
    resolved = []
    for part in parts:
        host, port = _split(part)
        resolved.append(f"{_literal(host)}:{port}")
    scheme = "ipv6" if all(r.startswith("[") for r in resolved) else "ipv4"
    if scheme == "ipv4" and any(r.startswith("[") for r in resolved):
        raise OSError(f"cannot mix IPv4 and IPv6 manager addresses: {address}")
    return f"{scheme}:{','.join(resolved)}", [("grpc.service_config", service_config())]


def _names(method: str | bytes) -> tuple[str, str]:
    m = method.decode() if isinstance(method, bytes) else method
    service, _, name = m.lstrip("/").partition("/")
    return service.rsplit(".", 1)[-1], name


class _UnaryMetrics(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts and times every unary call this process makes."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        service, name = _names(client_call_details.method)
        start = time.perf_counter()
        code = "OK"
        call = await continuation(client_call_details, request)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            CLIENT_HANDLED.labels(service, name, code).inc()
            CLIENT_SECONDS.labels(service, name).observe(time.perf_counter() - start)
        return call


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors every PixelFox channel gets (client-side metrics on unary calls)."""
    return [_UnaryMetrics()]
