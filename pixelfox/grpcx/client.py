"""Client side: channels with PixelFox's options, and wire errors mapped back to exceptions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from pixelfox import errors

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


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
            *extra,
        ],
        interceptors=multi.client_interceptors(),
    )


def error_from_rpc(exc: grpc.aio.AioRpcError) -> errors.PixelfoxError:
    """The :class:`~pixelfox.errors.PixelfoxError` a peer raised, from status and ``pixelfox-error-code``."""
    code, retry_after = "", ""
    for key, value in exc.trailing_metadata() or ():
        text = value.decode() if isinstance(value, bytes) else value
        if key == errors.ERROR_CODE_KEY:
            code = text
        elif key == errors.RETRY_AFTER_KEY:
            retry_after = text
    return errors.from_wire(code, exc.code(), exc.details() or exc.code().name,
                            retry_after_s=int(retry_after) if retry_after.isdigit() else 0)


@contextlib.asynccontextmanager
async def map_rpc_errors() -> AsyncIterator[None]:
    """Re-raise ``AioRpcError`` inside the block as the matching ``PixelfoxError``."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from exc
