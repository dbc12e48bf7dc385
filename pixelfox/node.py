"""What every cluster node does around its own work: register, heartbeat, drain on SIGTERM.

A node builds its :class:`~pixelfox.grpcx.server.GrpcServer`, then calls
:func:`run_node`, which starts the server and a Prometheus ``/metrics`` endpoint, registers
with the manager (retrying until it answers; a refusal, such as a heartbeat interval too long for
the manager's node timeout or a node id a live node elsewhere holds, ends the process with the
manager's reason), sends a heartbeat every
``cluster.heartbeat_interval_s`` seconds with the node's :class:`Load`, and on SIGTERM or
SIGINT reports NOT_SERVING and DRAINING (that heartbeat goes at once, and the node waits up to
``DRAIN_REPORT_S`` for a manager to answer it, so the manager stops handing it work before
it goes), runs the node's ``on_drain`` hook and stops the server with its grace period
(which waits only for calls still open: ``on_drain`` ends the node's own long streams, such
as the manager's ``Work`` streams). Its last heartbeat then says STOPPED (:meth:`Agent.stop` with
``leave``): the registry shows it ``stopped``, not as a node down, and drops it. Each heartbeat also carries
the node's readiness (its gRPC health, which :func:`watch_dependencies` keeps in step with the
node's dependency check), so the manager places no new work on a node whose pool or manager link
is down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from prometheus_client import start_http_server

from pixelfox import logs
from pixelfox.config import NodeSettings, load_settings, log_unknown_settings, print_config, require_secret
from pixelfox.grpcx.server import GrpcServer
from pixelfox.managerlink import ManagerLink, Peer
from pixelfox.v1 import common_pb2, manager_pb2

__all__ = ["Agent", "Load", "ManagerLink", "NodeIdentity", "node_main", "run_node", "start_metrics"]

logger = logging.getLogger(__name__)


@dataclass
class Load:
    """A node's load as sent in heartbeats: ``in_use`` of ``capacity`` units, free space in bytes."""

    in_use: int = 0
    capacity: int = 1
    free_bytes: int = 0


@dataclass
class NodeIdentity:
    role: int  # common_pb2.NodeRole
    node_id: str
    grpc_address: str
    http_url: str = ""
    metrics_url: str = ""
    capabilities: list[str] = field(default_factory=list)
    host: str = field(default_factory=socket.gethostname)  # with the address, tells a restart from a duplicate id
    #: this process among every node that ever ran as ``node_id``: 16 random hex digits drawn at start, sent
    #: with Register and every Heartbeat (a frozen node whose id a successor took over is refused), and
    #: served by a gRPC node as a health entry (:func:`pixelfox.grpcx.server.instance_service`)
    instance: str = field(default_factory=lambda: secrets.token_hex(8))


def start_metrics(host: str, port: int) -> str:
    """Serve Prometheus metrics on ``host:port`` (0 = free port); return the URL, "" if disabled."""
    if port < 0:
        return ""
    server, _thread = start_http_server(port, addr=host)
    return f"http://{host}:{server.server_port}/metrics"


class Refused(Exception):
    """A manager refused this node's registration for good; ``str(exc)`` is the one-line reason."""


#: what a manager answers to a registration it will never accept: no point in retrying
REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT,
                     grpc.StatusCode.ALREADY_EXISTS})
#: seconds between registration attempts while no manager answers: 0.2 doubling up to this. A node
#: joins a manager that came up within about this long (the channel's own reconnect back-off,
#: :data:`pixelfox.managerlink.MANAGER_RECONNECT_MS`, is 1 s at most); it was 2 s, so a cluster
#: whose manager started last (the slowest to import) was ready up to 2 s after it served
REGISTER_RETRY_MAX_S = 0.5


async def _register(link: ManagerLink, ident: NodeIdentity, load: Load, interval: float, stop: asyncio.Event) -> None:
    """Register with the manager, retrying until it answers (or ``stop``); ``interval`` is this node's
    heartbeat interval in seconds, which the manager checks. Raises :class:`Refused` (the manager's
    reason) when the manager refuses the node: a wrong cluster credential, a heartbeat interval too long
    for the manager's node timeout, a node id a live node elsewhere holds, a request it cannot accept."""
    delay = 0.2
    while not stop.is_set():
        try:
            await link.stub.Register(
                manager_pb2.RegisterRequest(
                    role=ident.role,  # type: ignore[arg-type]
                    node_id=ident.node_id,
                    grpc_address=ident.grpc_address,
                    http_url=ident.http_url,
                    metrics_url=ident.metrics_url,
                    capacity=load.capacity,
                    capabilities=ident.capabilities,
                    free_bytes=load.free_bytes,
                    version="0.1.0",
                    heartbeat_interval_s=interval,
                    host=ident.host,
                    instance=ident.instance,
                ),
                metadata=link.metadata,
                timeout=5,
            )
            link.last_ok = time.monotonic()
            logger.info("registered with the manager as %s", ident.node_id)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() in REFUSED:
                raise Refused(f"manager refused registration: {exc.details()}") from exc
            logger.info("manager not reachable yet (%s); retrying", exc.code().name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, REGISTER_RETRY_MAX_S)


async def _heartbeats(
    link: ManagerLink,
    ident: NodeIdentity,
    load_fn: Callable[[], Load],
    interval: float,
    stop: asyncio.Event,
    draining: asyncio.Event,
    ready: Callable[[], bool],
    told: asyncio.Event,
    readiness: Callable[[], asyncio.Event],
) -> None:
    """Send a heartbeat every ``interval`` seconds to every manager on its own (see
    :mod:`pixelfox.managerlink`): one that freezes delays only its own heartbeats, each failing at its
    deadline, ``max(3 intervals, 2 s)``. A manager that does not know the node (or knows another instance
    under its id: a successor took it over while this one was frozen) gets it registered again.
    Once ``draining`` is set the next heartbeat (DRAINING) goes at once, not after the interval; ``told``
    is set when a manager answered one. So does the next one after the node's readiness changed:
    ``readiness()`` is the event the next change sets (:meth:`Agent.readiness_changed`)."""
    registering = asyncio.Lock()

    async def beat(peer: Peer | None, send: Callable[..., Any]) -> None:
        while not stop.is_set():
            changed = readiness()  # taken before ready() is read: a change after it wakes the pause below
            load = load_fn()
            status = common_pb2.NODE_STATUS_DRAINING if draining.is_set() else common_pb2.NODE_STATUS_ACTIVE
            try:
                reply = await send(
                    manager_pb2.HeartbeatRequest(
                        node_id=ident.node_id,
                        in_use=load.in_use,
                        capacity=load.capacity,
                        free_bytes=load.free_bytes,
                        status=status,
                        not_ready=not ready(),
                        instance=ident.instance,
                    ),
                    metadata=link.metadata,
                    timeout=max(interval * 3, 2.0),
                )
                link.answered(peer, True)
                if status == common_pb2.NODE_STATUS_DRAINING:
                    told.set()
                if not reply.known:
                    logger.info("the manager does not know this process as %s (its record was dropped, or another "
                                "instance took the id over): registering again", ident.node_id)
                    async with registering:
                        await _register(link, ident, load, interval, stop)
            except grpc.aio.AioRpcError as exc:
                link.answered(peer, False)
                logger.warning("heartbeat to %s failed: %s", peer.address if peer else "the manager", exc.code().name)
            # the pause ends early when the node starts draining, unless this heartbeat already said so, and
            # when its readiness changes (a node that became ready again gets work without waiting the interval)
            wake = [stop, changed] if status == common_pb2.NODE_STATUS_DRAINING else [stop, draining, changed]
            await _first_of(wake, interval)

    try:
        await asyncio.gather(*(beat(peer, send) for peer, send in link.targets()))
    except Refused:
        stop.set()  # a manager refused the node when it registered again: every manager's loop ends
        raise


async def _first_of(events: list[asyncio.Event], timeout_s: float | None) -> None:
    """Wait until one of ``events`` is set or ``timeout_s`` seconds passed (None: no limit)."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _agent_done(task: asyncio.Task[None]) -> None:
    """Log anything the agent raised (a refused registration is no error here: :attr:`Agent.refusal`)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.error("registration and heartbeats stopped: %s", exc, exc_info=exc)


class Agent:
    """Registration and heartbeats for one node, usable by nodes with or without a gRPC server.

    ``load_fn`` is called for every heartbeat, and so is ``ready`` (cheap, no I/O: a cached
    readiness such as :attr:`GrpcServer.serving`; None = always ready). :meth:`start` returns at
    once (registration retries in the background until the manager answers); :meth:`set_draining`
    makes the following heartbeats report DRAINING; :meth:`stop` ends the loop (after a clean stop it
    first tells a manager the node STOPPED) and closes the channel. A manager that refuses the node
    (:func:`_register`, at start or when a manager asks it to register again) ends the loop too:
    :attr:`refusal` then holds the SystemExit with its reason, which the node raises once it has stopped
    (:meth:`wait` returns as soon as it is refused).
    ``link`` is the node's own :class:`ManagerLink` when it makes calls to the managers itself: the
    heartbeats then tell it which managers are live (the node closes it; :meth:`stop` does not).
    """

    def __init__(self, settings: NodeSettings, ident: NodeIdentity, load_fn: Callable[[], Load],
                 ready: Callable[[], bool] | None = None, link: ManagerLink | None = None) -> None:
        self.settings = settings
        self.ident = ident
        self.load_fn = load_fn
        self.ready = ready or (lambda: True)
        # the node's own link when it has one: its calls then go to the managers its heartbeats found live
        self.link = link or ManagerLink(settings)
        self._own_link = link is None
        self._stop = asyncio.Event()
        self._draining = asyncio.Event()
        self._told = asyncio.Event()  # a manager answered a DRAINING heartbeat
        self._readiness = asyncio.Event()  # set (and replaced) when the node's readiness changes
        self._task: asyncio.Task[None] | None = None
        self.refused = asyncio.Event()  # set when a manager refused the node
        self.refusal: SystemExit | None = None  # why (one line, the process' exit message)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._task.add_done_callback(_agent_done)

    async def _run(self) -> None:
        interval = self.settings.cluster.heartbeat_interval_s
        try:
            await _register(self.link, self.ident, self.load_fn(), interval, self._stop)
            await _heartbeats(self.link, self.ident, self.load_fn, interval, self._stop, self._draining, self.ready,
                              self._told, lambda: self._readiness)
        except Refused as exc:
            # kept, not raised here: SystemExit out of a task leaves the event loop at once, with the
            # gRPC server still running (an upload node then died of SIGSEGV instead of exiting 1)
            self.refusal = SystemExit(str(exc))
            self.refused.set()

    async def wait(self, term: asyncio.Event) -> None:
        """Wait until ``term`` is set or a manager refused this node (:attr:`refusal`)."""
        await _first_of([term, self.refused], None)

    def readiness_changed(self) -> None:
        """The node's readiness (``ready``) changed: every manager hears it with a heartbeat at once, not
        after the interval (a node that was not ready at its start, its manager not up yet, was left
        without work for a whole interval after it was ready)."""
        changed, self._readiness = self._readiness, asyncio.Event()
        changed.set()

    def set_draining(self) -> None:
        """Report DRAINING from now on; the next heartbeat goes at once."""
        self._draining.set()

    async def drain(self, timeout_s: float) -> bool:
        """:meth:`set_draining` and wait up to ``timeout_s`` seconds until a manager answered a DRAINING
        heartbeat (so the manager stops handing it work before it goes); True if one did."""
        self.set_draining()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._told.wait(), timeout_s)
        return self._told.is_set()

    def manager_reachable(self) -> bool:
        """True when a manager answered a heartbeat within the last ``max(3 intervals, 3 s)``."""
        return self.link.last_ok > 0 and time.monotonic() - self.link.last_ok < self.link.window_s

    async def stop(self, leave: bool = False) -> None:
        """End the heartbeats; with ``leave`` (a clean stop, once drained) then send one last heartbeat
        saying STOPPED (:meth:`leave`) before the channel closes."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if leave:
            await self.leave(LEAVE_REPORT_S)
        if self._own_link:
            await self.link.close()

    async def leave(self, timeout_s: float) -> bool:
        """Tell a manager this node stopped cleanly (a STOPPED heartbeat; the registry then shows it
        ``stopped`` and drops it); waits up to ``timeout_s`` seconds. True if a manager answered.
        Call it once the heartbeat loop ended: a later heartbeat would make the node register again."""
        try:
            await self.link.stub.Heartbeat(
                manager_pb2.HeartbeatRequest(node_id=self.ident.node_id, status=common_pb2.NODE_STATUS_STOPPED,
                                             instance=self.ident.instance),
                metadata=self.link.metadata, timeout=timeout_s)
            return True
        except grpc.aio.AioRpcError as exc:
            logger.warning("could not tell a manager that %s stopped: %s", self.ident.node_id, exc.code().name)
            return False


DRAIN_REPORT_S = 2.0  # seconds a draining node waits at most for a manager to answer its DRAINING heartbeat
LEAVE_REPORT_S = 2.0  # seconds a stopped node waits at most for a manager to answer its STOPPED heartbeat
DEPENDENCY_CHECK_S = 1.0  # seconds between dependency checks once serving (same order as heartbeats)


async def watch_dependencies(
    server: GrpcServer, ready: Callable[[], Awaitable[bool]], draining: asyncio.Event, every_s: float,
    on_change: Callable[[], None] | None = None,
) -> None:
    """Re-run ``ready`` every ``every_s`` seconds and mirror it in the gRPC health status; ``on_change``
    is called after each flip (the node's :meth:`Agent.readiness_changed`).

    A dependency that goes down at run time (the manager's Redis or database, a storage
    node's pool, an upload node's manager) turns the node NOT_SERVING until it is back;
    once ``draining`` is set the status is left NOT_SERVING. A check that raises or takes
    longer than ``max(every_s, 2)`` seconds counts as down.
    """
    serving = True
    while not draining.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(draining.wait(), every_s)
        if draining.is_set():
            return
        try:
            ok = bool(await asyncio.wait_for(ready(), max(every_s, 2.0)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug("dependency check raised: %s", exc)
            ok = False
        if ok != serving and not draining.is_set():
            logger.warning("dependencies %s: now %s", "back" if ok else "down", "SERVING" if ok else "NOT_SERVING")
            await server.set_serving(ok)
            serving = ok
            if on_change is not None:
                on_change()


def _with_manager(ready: Callable[[], Awaitable[bool]] | None, agent: Agent) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return agent.manager_reachable() and (ready is None or await ready())

    return check


async def _drain(ident: NodeIdentity, server: GrpcServer, agent: Agent | None,
                 on_drain: Callable[[], Awaitable[None]] | None) -> None:
    """SIGTERM: NOT_SERVING, a DRAINING heartbeat a manager answered (or ``DRAIN_REPORT_S``), then ``on_drain``."""
    logger.info("%s draining", ident.node_id)
    await server.set_serving(False)
    if agent is not None and not await agent.drain(DRAIN_REPORT_S):
        logger.warning("no manager answered the DRAINING heartbeat within %g s", DRAIN_REPORT_S)
    if on_drain is not None:
        await on_drain()


async def run_node(
    settings: NodeSettings,
    server: GrpcServer,
    ident: NodeIdentity,
    load_fn: Callable[[], Load],
    *,
    background: list[Callable[[asyncio.Event], Awaitable[None]]] | None = None,
    on_drain: Callable[[], Awaitable[None]] | None = None,
    ready: Callable[[], Awaitable[bool]] | None = None,
    link: ManagerLink | None = None,
) -> None:
    """Run a node until SIGTERM/SIGINT (see module doc).

    ``background`` tasks get the stop event and must return once it is set. ``ready`` is
    awaited before the health status turns SERVING (dependency checks), then re-checked
    every second by :func:`watch_dependencies`; the resulting health status goes to the manager
    with every heartbeat (not ready: no new work). ``link`` is the node's own link to the managers,
    shared with its heartbeats (see :class:`Agent`). The manager itself
    passes a role of ``NODE_ROLE_MANAGER`` and gets no agent.
    """
    stop = asyncio.Event()  # set last: background loops end
    term = asyncio.Event()  # SIGTERM/SIGINT seen: start draining
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, term.set)
    await server.start()
    await server.announce_instance(ident.instance)  # before it registers: the manager may ask (liveness)
    if ready is not None:
        while not await ready():
            # SIGTERM while a dependency (Redis, the database) is still down: stop now; this loop
            # slept through it, so only SIGKILL stopped a node that never got ready
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(term.wait(), 0.5)
            if term.is_set():
                await server.stop(0)
                logger.info("%s stopped before its dependencies were ready", ident.node_id)
                return
    await server.set_serving(True)
    agent = None
    if ident.role != common_pb2.NODE_ROLE_MANAGER:
        agent = Agent(settings, ident, load_fn, ready=lambda: server.serving, link=link)
    tasks: list[asyncio.Task[None]] = []
    drained = False  # a clean stop: the node says STOPPED last
    try:
        if agent is not None:
            await agent.start()
        tasks.extend(asyncio.create_task(fn(stop)) for fn in background or [])
        check = ready
        if agent is not None and ident.role == common_pb2.NODE_ROLE_UPLOAD:
            check = _with_manager(ready, agent)  # an upload node cannot finish uploads without a manager
        if check is not None:
            tasks.append(asyncio.create_task(watch_dependencies(
                server, check, term, DEPENDENCY_CHECK_S, agent.readiness_changed if agent is not None else None)))
        logger.info("%s serving gRPC on %s", ident.node_id, ident.grpc_address)
        await (term.wait() if agent is None else agent.wait(term))
        if agent is None or agent.refusal is None:  # refused: stop at once, no more word to a manager
            await _drain(ident, server, agent, on_drain)
            drained = True
    finally:
        stop.set()
        await server.stop(settings.grpc.grace_s)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if agent is not None:
            await agent.stop(leave=drained)
        logger.info("%s stopped", ident.node_id)
    if agent is not None and agent.refusal is not None:
        raise agent.refusal  # the process exits with the manager's reason, once everything stopped


SettingsT = TypeVar("SettingsT", bound=NodeSettings)


def node_main(prog: str, description: str, settings_cls: type[SettingsT],
              serve: Callable[[SettingsT], Awaitable[None]], default_id: str) -> None:
    """The ``__main__`` of a gRPC node: ``--print-config`` (secrets redacted), settings loaded and checked once
    (``node_id`` unset: ``default_id``; a usable cluster secret is required:
    :func:`pixelfox.config.require_secret`), logging configured, then
    ``serve(settings)`` until SIGTERM."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--print-config", action="store_true", help="print the effective settings and exit")
    opts = parser.parse_args()
    settings = load_settings(settings_cls)
    settings.node_id = settings.node_id or default_id  # --print-config shows the id the node goes by
    if opts.print_config:
        print_config(settings)
        return
    require_secret(settings)
    logs.configure(settings.log, settings.node_id)
    log_unknown_settings(settings_cls)
    asyncio.run(serve(settings))
    # the process exits now: skip the interpreter's last full garbage collection over every object left
    # (SQLAlchemy, protobuf, grpc), which took a stopped manager 0.7-1.9 s on a loaded 2-core box
    gc.freeze()
