"""Server side: the one wrapper around every servicer method, and server bootstrap with health.

``@rpc()`` / ``@rpc(cluster=True)`` wraps a unary or request-streaming method;
``@rpc_stream()`` wraps a response-streaming (async generator) method. The wrapper

* checks the cluster credential when ``cluster=True`` (``UNAUTHENTICATED`` otherwise), and
  refuses a cluster credential sent that does not match this node's secret on any method,
* puts the :class:`~pixelfox.grpcx.auth.Caller` in ``context`` reach via :func:`caller`,
* turns :class:`~pixelfox.errors.PixelfoxError` into ``context.abort`` with the mapped status
  and ``pixelfox-error-code`` trailing metadata, a Redis connection error or timeout into
  ``UNAVAILABLE`` ("the manager cannot reach Redis (timeout): ..."), and anything else into
  ``INTERNAL`` with a generic message (the traceback is logged, never sent),
* counts calls in Prometheus (``grpc_server_handled_total``, ``grpc_server_handling_seconds``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import grpc
import redis.exceptions
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from pixelfox import errors
from pixelfox.grpcx.auth import CLUSTER_TOKEN_KEY, Caller, read_caller

logger = logging.getLogger(__name__)

GRPC_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server", ["grpc_service", "grpc_method", "grpc_code"]
)
GRPC_SECONDS = Histogram(
    "grpc_server_handling_seconds", "RPC handling time (s)", ["grpc_service", "grpc_method"]
)

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("pixelfox_caller", default=None)

F = TypeVar("F", bound=Callable[..., Any])


def caller() -> Caller:
    """The verified caller of the RPC being handled."""
    return _caller.get() or Caller()


class _Secret:
    """Holder for the cluster secret the wrapper checks against (set once by :func:`build_server`)."""

    value = ""


def _names(method: Callable[..., Any]) -> tuple[str, str]:
    service = method.__qualname__.split(".")[0].removesuffix("Servicer")
    return service, method.__name__


def _this_node() -> str:
    """How a message names this process: "the manager", "the upload node"... from the module it runs
    (``python -m nodes.<role>``); "this node" when run otherwise."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    parts = (spec.name if spec else "").split(".")
    if len(parts) < 2 or parts[0] != "nodes":
        return "this node"
    return "the manager" if parts[1] == "manager" else f"the {parts[1]} node"


def _redis_down(exc: BaseException) -> errors.Unavailable | None:
    """A lost or hung Redis (connection refused or reset, a read timing out) as UNAVAILABLE naming
    Redis and this node, e.g. "the manager cannot reach Redis (timeout): ..."; None for any other error."""
    if not isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return None
    kind = "timeout" if isinstance(exc, redis.exceptions.TimeoutError) else "connection"
    logger.warning("Redis not reachable during an RPC (%s: %s)", kind, exc)
    return errors.Unavailable(f"{_this_node()} cannot reach Redis ({kind}): {exc}")


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, errors.PixelfoxError):
        err = exc
    else:
        logger.exception("unhandled error in RPC", exc_info=exc)
        err = errors.PixelfoxError()
    await context.abort(err.grpc_status, err.message, trailing_metadata=errors.wire_metadata(err))


def _authorise(context: grpc.aio.ServicerContext, cluster: bool) -> None:
    metadata = context.invocation_metadata() or ()
    who = read_caller(metadata, _Secret.value)
    if not who.cluster and any(key.lower() == CLUSTER_TOKEN_KEY for key, _ in metadata):
        # sent, but another cluster's secret: on any method, so that `PIXELFOX_CLUSTER__SECRET=wrong pixelfox
        # users create` is not told it needs the credential it did send
        raise errors.Unauthenticated(
            f"the cluster credential sent does not match {_this_node()}'s cluster secret (check that "
            "PIXELFOX_CLUSTER__SECRET is the same on every node)")
    if cluster and not who.cluster:
        raise errors.Unauthenticated("this method needs the cluster credential")
    _caller.set(who)


@contextlib.asynccontextmanager
async def _handled(context: grpc.aio.ServicerContext, cluster: bool, service: str, name: str) -> AsyncIterator[None]:
    """What both wrappers do around a call: authorise, map errors to statuses, count and time it."""
    start = time.perf_counter()
    code = "OK"
    try:
        _authorise(context, cluster)
        yield
    except grpc.aio.AbortError:
        code = "ABORTED_BY_HANDLER"
        raise
    except Exception as exc:
        exc = _redis_down(exc) or exc
        code = getattr(exc, "grpc_status", grpc.StatusCode.INTERNAL).name
        await _abort(context, exc)
    finally:
        GRPC_HANDLED.labels(service, name, code).inc()
        GRPC_SECONDS.labels(service, name).observe(time.perf_counter() - start)


def rpc(cluster: bool = False) -> Callable[[F], F]:
    """Wrap a unary-response servicer method (see module doc)."""

    def deco(method: F) -> F:
        service, name = _names(method)

        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _handled(context, cluster, service, name):
                return await method(self, request, context)

        return wrapper  # type: ignore[return-value]

    return deco


def rpc_stream(cluster: bool = False) -> Callable[[F], F]:
    """Wrap a response-streaming servicer method written as an async generator."""

    def deco(method: F) -> F:
        service, name = _names(method)

        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with _handled(context, cluster, service, name):
                async for item in method(self, request, context):
                    yield item

        return wrapper  # type: ignore[return-value]

    return deco


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel args for every PixelFox server: message caps and keepalive (RELIABILITY.md §5)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_concurrent_streams", 256),
    ]


def instance_service(instance: str) -> str:
    """The health entry under which a node process answers SERVING as ``instance`` (its
    ``NodeIdentity.instance``): a gRPC health ``Check`` for it at the node's address is answered by that
    process alone, NOT_FOUND by any other server (a node started since at that address). The manager
    asks it before it gives a live node's id to a node at another address (:mod:`nodes.manager.liveness`)."""
    return f"pixelfox.instance/{instance}"


class GrpcServer:
    """A ``grpc.aio`` server with health (and optional reflection) for the given services.

    ``add`` is a list of ``(add_XServicer_to_server, servicer, full_service_name)``; ``options``
    are channel args added to (or replacing) :func:`server_options`.
    ``port`` 0 binds a free port; the bound port is in :attr:`port` after :meth:`start`.
    """

    def __init__(
        self,
        add: Iterable[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]],
        *,
        host: str,
        port: int,
        secret: str,
        max_message_bytes: int = 8 * 1024 * 1024,
        reflection_on: bool = True,
        options: Iterable[tuple[str, int]] = (),
    ) -> None:
        _Secret.value = secret
        merged = dict(server_options(max_message_bytes))
        merged.update(options)
        self.server = grpc.aio.server(options=list(merged.items()))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = []
        for adder, servicer, full_name in add:
            adder(servicer, self.server)
            self.service_names.append(full_name)
        if reflection_on:
            reflection.enable_server_reflection(
                [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
            )
        self.serving = False  # what set_serving last said: the node's readiness, sent with its heartbeats
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise errors.Unavailable(f"cannot bind gRPC port {host}:{port}")

    async def start(self) -> None:
        """Start taking calls, every service NOT_SERVING until :meth:`set_serving` says otherwise: grpcio's
        health servicer starts the whole-server entry ("") at SERVING, so a node still waiting for Redis or
        its database told a load balancer's or Kubernetes' gRPC probe it was serving."""
        await self.set_serving(False)
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        """Flip every service (and the whole-server entry "") to SERVING or NOT_SERVING (kept in :attr:`serving`)."""
        self.serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def announce_instance(self, instance: str) -> None:
        """Answer SERVING for :func:`instance_service` of ``instance`` (this process' instance id) from now on;
        :meth:`set_serving` leaves it be (a node waiting for a dependency is still this process)."""
        await self.health.set(instance_service(instance), health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, then stop taking calls and give in-flight ones ``grace_s`` seconds."""
        self.serving = False
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)

