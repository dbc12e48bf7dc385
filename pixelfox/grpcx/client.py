"""Client side: channels with PixelFox's options, and wire errors mapped back to exceptions."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from urllib.parse import unquote

import grpc

from pixelfox import errors

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: how long a channel waits for a peer to take a new connection (TCP and HTTP/2 handshake), ms: gRPC's
#: default is 20 s, which a frozen node's kernel (it still completes the TCP handshake) made every
#: write to it wait, three times per upload; a live node answers in milliseconds, on a LAN too
CONNECT_TIMEOUT_MS = 5_000


def channel(address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
            reconnect_ms: tuple[int, int] = (500, 2_000)) -> grpc.aio.Channel:
    """An insecure ``grpc.aio`` channel to ``address`` (``host:port``) with keepalive and message caps.

    ``reconnect_ms`` is gRPC's reconnect back-off to a peer that is down, first and largest pause in
    milliseconds (jittered by gRPC): how soon the channel finds a peer that came back.

    Keepalive 10 s / 5 s (RELIABILITY.md §5: a silent partition is seen within keepalive,
    not at the deadline). ``address`` may list several ``host:port`` separated by commas
    (several managers): the channel then balances calls round-robin over the ones that are
    up and retries a unary call that failed ``UNAVAILABLE`` on another (see
    :mod:`pixelfox.grpcx.multi`). Every call is counted client-side in Prometheus
    (``grpc_client_handled_total``, ``grpc_client_handling_seconds``).
    """
    from pixelfox.grpcx import multi  # local import: multi imports this module's constants

    target, extra = multi.target(address)
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.enable_retries", 1),
            # reconnect to a peer that came back (a restarted manager) within 2 s, not after
            # gRPC's default back-off of up to 120 s: heartbeats must resume before node_timeout_s
            ("grpc.initial_reconnect_backoff_ms", reconnect_ms[0]),
            ("grpc.max_reconnect_backoff_ms", reconnect_ms[1]),
            # gRPC's name for its connect timeout (subchannel: min_connect_timeout)
            ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),
            *extra,
        ],
        interceptors=multi.client_interceptors(),
    )


#: what gRPC's text says of a connection it could not make -> the cause, in a few words (first match wins)
CONNECT_CAUSES = (
    ("Connection refused", "connection refused"),
    ("Domain name not found", "host name not found"),
    ("Name or service not known", "host name not found"),
    ("Misformatted domain name", "not a host name"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
    ("Timeout occurred", "connection timed out"),
    ("connection attempt timed out", "connection timed out"),
    ("Connection reset", "connection reset"),
)
#: how gRPC's text starts when no connection could be made at all (one address, several, a name)
_NOT_CONNECTED = ("failed to connect to all addresses", "connections to all backends failing",
                  "errors resolving", "DNS resolution failed")
#: the address gRPC's text names: ``ipv4:127.0.0.1:1: ...``, ``ipv6:%5B::1%5D:1: ...``, ``errors resolving h:80: ...``
_ADDRESS = re.compile(r"\b(?:ipv4|ipv6):(\S+?): |(?:errors resolving|DNS resolution failed for) (\S+?):? ")


def connect_failure(exc: grpc.aio.AioRpcError) -> tuple[str, str]:
    """``(cause, address)`` when ``exc`` is the channel failing to connect to its peer (refused, a name
    that does not resolve, no route): the cause in a few words (:data:`CONNECT_CAUSES`, else "cannot
    connect") and the address gRPC names ("" when it names none). ``("", "")`` when the peer answered,
    even with ``UNAVAILABLE`` (a PixelFox peer then sends a ``pixelfox-error-code``)."""
    details = exc.details() or ""
    if (exc.code() != grpc.StatusCode.UNAVAILABLE or not details.startswith(_NOT_CONNECTED)
            or any(key == errors.ERROR_CODE_KEY for key, _ in exc.trailing_metadata() or ())):
        return "", ""
    cause = next((cause for needle, cause in CONNECT_CAUSES if needle in details), "cannot connect")
    found = _ADDRESS.search(details)
    return cause, (unquote(found.group(1) or found.group(2)) if found else "")


def trailer(exc: grpc.aio.AioRpcError, key: str) -> str:
    """The value of trailing-metadata ``key`` of a failed call ("" when absent): a PixelFox server
    sends its error's code (``pixelfox-error-code``) and a retry-after there."""
    for k, value in exc.trailing_metadata() or ():
        if k == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def error_from_rpc(exc: grpc.aio.AioRpcError, peer: str = "", hint: str = "",
                   silent_hint: str = "") -> errors.PixelfoxError:
    """The :class:`~pixelfox.errors.PixelfoxError` a peer raised, from status and ``pixelfox-error-code``.

    A call that could not connect at all (:func:`connect_failure`) becomes ``Unavailable("cannot reach
    PEER (CAUSE); HINT")`` (``NotAnswering("PEER did not answer (no connection in 5 s); SILENT_HINT")``
    when the connection timed out: a frozen or hung peer): ``peer`` names what was
    called ("the manager at 127.0.0.1:7070"; default: the address gRPC names), ``hint`` (optional)
    says what to do about it. A call whose deadline passed with no answer at all (no
    ``pixelfox-error-code``: a frozen or hung peer) becomes ``Timeout("PEER did not answer before the
    call's deadline; SILENT_HINT")`` when ``peer`` is given (it was gRPC's bare "Deadline Exceeded")."""
    cause, address = connect_failure(exc)
    if cause == "connection timed out" and (peer or address):  # it is there (its kernel took the TCP handshake)
        return errors.NotAnswering(f"{peer or address} did not answer (no connection in "
                                   f"{CONNECT_TIMEOUT_MS / 1000:g} s)" + (f"; {silent_hint}" if silent_hint else ""))
    if cause and (peer or address):
        return errors.Unavailable(f"cannot reach {peer or address} ({cause})" + (f"; {hint}" if hint else ""))
    code, retry_after = trailer(exc, errors.ERROR_CODE_KEY), trailer(exc, errors.RETRY_AFTER_KEY)
    if peer and not code and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.Timeout(f"{peer} did not answer before the call's deadline"
                              + (f"; {silent_hint}" if silent_hint else ""))
    return errors.from_wire(code, exc.code(), exc.details() or exc.code().name,
                            retry_after_s=int(retry_after) if retry_after.isdigit() else 0)


@contextlib.asynccontextmanager
async def map_rpc_errors(peer: str = "", hint: str = "", silent_hint: str = "") -> AsyncIterator[None]:
    """Re-raise ``AioRpcError`` inside the block as the matching ``PixelfoxError``; ``peer`` and
    ``hint`` word a call that could not connect, ``silent_hint`` one that got no answer before its
    deadline (:func:`error_from_rpc`)."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, peer, hint, silent_hint) from exc
