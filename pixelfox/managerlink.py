"""A node's link to its manager(s): one channel over all of them, plus one channel per manager.

With one manager every call goes over one channel. With several (``cluster.manager`` lists them,
comma-separated) the node also keeps a channel to each: its heartbeats go to every manager at once
(:func:`pixelfox.node._heartbeats`), and each answer or failure marks that manager live or not.
Calls (:attr:`ManagerLink.stub`) then go round-robin to the managers whose last heartbeat was
answered. A frozen manager (SIGSTOP, a hung process) keeps its TCP connections open, so the
shared round-robin channel kept handing it every other call, each waiting for its deadline; here
it is left out once one heartbeat to it times out. While no manager has answered yet (start-up)
calls use the shared channel, whose retry on ``UNAVAILABLE`` (:mod:`pixelfox.grpcx.multi`)
also catches a unary call that hit a manager killed since its last heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from pixelfox.config import NodeSettings
from pixelfox.errors import ERROR_CODE_KEY
from pixelfox.grpcx import multi
from pixelfox.grpcx.auth import node_metadata
from pixelfox.grpcx.client import channel, trailer
from pixelfox.v1 import manager_pb2_grpc

logger = logging.getLogger(__name__)

#: gRPC's reconnect back-off to the manager (ms): first pause, largest pause
MANAGER_RECONNECT_MS = (100, 1_000)


class Peer:
    """One manager: its own channel and stub, and whether its last heartbeat was answered."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = channel(address, reconnect_ms=MANAGER_RECONNECT_MS)
        self.stub = manager_pb2_grpc.ManagerServiceStub(self.channel)
        self.live = False  # its last heartbeat was answered
        self.last_ok = 0.0  # monotonic time of that answer
        self.down = asyncio.Event()  # set while not live
        self.down.set()
        self.up = asyncio.Event()  # set while live

    async def stays_down(self, for_s: float) -> None:
        """Return once this manager's heartbeats have failed for ``for_s`` seconds with none answered since
        (one slow answer is not enough)."""
        while True:
            await self.down.wait()
            try:
                await asyncio.wait_for(self.up.wait(), for_s)
            except TimeoutError:
                return


class _Routed:
    """A ``ManagerServiceStub`` look-alike: unary calls go to ``first`` and, if that fails ``UNAVAILABLE``
    without a PixelFox error code (the manager died since its last heartbeat: nothing answered), once
    more to ``fallback``; streams go to ``first``. An ``UNAVAILABLE`` the manager itself answered (its
    Redis is down, no storage node: ``pixelfox-error-code`` set) is raised as is: the call ran there,
    and a second run elsewhere would double a delete or an upload."""

    def __init__(self, first: Any, fallback: Any) -> None:
        self._first = first
        self._fallback = fallback

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._first, name)
        if not isinstance(method, grpc.aio.UnaryUnaryMultiCallable):
            return method
        again = getattr(self._fallback, name)

        async def call(request: Any, **kwargs: Any) -> Any:
            try:
                return await method(request, **kwargs)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or bool(trailer(exc, ERROR_CODE_KEY)):
                    raise
                return await again(request, **kwargs)

        return call


#: ``ManagerService`` calls that only read: asked again of another manager (:meth:`ManagerLink.call`) when the
#: one they went to freezes, as a repeat changes nothing (``VerifyPassword`` counts no attempt: the web node's
#: login throttle does, before the call)
READS = frozenset({"ListNodes", "GetUpload", "ListUploads", "GetImage", "ListImages", "GetUser", "WhoAmI",
                   "GetAlbum", "CheckAlbum", "ListAlbums", "ListReports", "ListApiKeys", "ListUsers",
                   "AdminOverview", "VerifyPassword", "CheckUpload"})


class _ReadsAgain:
    """:attr:`ManagerLink.read_stub`: ``READS`` through :meth:`ManagerLink.call`, the rest to the next stub."""

    def __init__(self, link: ManagerLink) -> None:
        self._link = link

    def __getattr__(self, name: str) -> Any:
        if name not in READS:
            return getattr(self._link.stub, name)

        async def read(request: Any, *, metadata: Sequence[tuple[str, str]] | None = None,
                       timeout: float = 10.0) -> Any:  # noqa: ASYNC109 (a stub's keyword)
            return await self._link.call(name, request, timeout, metadata=metadata)
        return read


class ManagerLink:
    """The node's channels to the manager(s) with its cluster credential (see module doc).

    ``peers`` is empty with one manager address (or a ``dns:`` target), else one :class:`Peer`
    per address. ``last_ok`` is the monotonic time any manager last answered a Register or Heartbeat.
    """

    def __init__(self, settings: NodeSettings) -> None:
        # a restarted manager is found within about a second: heartbeats and processing nodes' Work streams
        # resume at once (a refused connect to a down manager once a second is cheap)
        self.channel = channel(settings.cluster.manager, reconnect_ms=MANAGER_RECONNECT_MS)
        self.shared = manager_pb2_grpc.ManagerServiceStub(self.channel)
        self.metadata = node_metadata(settings.cluster.secret.get_secret_value())
        self.last_ok = 0.0
        #: seconds without an answer after which a manager counts as gone: max(3 heartbeat intervals, 3 s)
        self.window_s = max(3 * settings.cluster.heartbeat_interval_s, 3.0)
        addresses = multi.addresses(settings.cluster.manager)
        self.peers = [Peer(a) for a in addresses] if len(addresses) > 1 else []
        self._turn = itertools.count()
        self._some_live = asyncio.Event()  # set while a peer is live

    @property
    def stub(self) -> Any:
        """The stub for the next call (see :meth:`pick`). Read it for every call (``link.stub.Method(...)``)."""
        return self.pick()[1]

    @property
    def read_stub(self) -> Any:
        """A stub like :attr:`stub` whose unary :data:`READS` go through :meth:`call` (``timeout`` is its
        ``deadline_s``, ``metadata`` the caller's): a read sent to a manager that freezes is asked again of
        another one instead of waiting out its deadline. Everything else as :attr:`stub`."""
        return _ReadsAgain(self)

    def pick(self, exclude: frozenset[Peer] = frozenset()) -> tuple[Peer | None, Any]:
        """The next live manager (round-robin) but those in ``exclude``, and a stub for it; ``(None, shared
        stub)`` while none is known live (start-up, or one manager only)."""
        live = [p for p in self.peers if p.live and p not in exclude]
        if not live:
            return None, self.shared
        peer = live[next(self._turn) % len(live)]
        return peer, _Routed(peer.stub, self.shared)

    async def call(self, method: str, request: Any, deadline_s: float,
                   metadata: Sequence[tuple[str, str]] | None = None) -> Any:
        """Unary ``method`` (e.g. ``"CompleteUpload"``) on the next live manager (:meth:`pick`) with the
        link's credential (or ``metadata``: a web node's caller), within ``deadline_s`` seconds in all. When
        that manager's heartbeats fail while the call waits (it froze: SIGSTOP keeps its connections open and
        nothing answers before the deadline), the call is dropped there and made again on another live
        manager with the time left; with no other live, it waits on. Only for calls a repeat cannot double:
        ``CompleteUpload`` answers a repeat with the first answer (the upload row is locked), ``PlaceObject``
        and a web node's reads (:data:`READS`) read, ``FailUpload`` records once.
        Raises what the stub raises (``grpc.aio.AioRpcError``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        tried: frozenset[Peer] = frozenset()
        while True:
            peer, stub = self.pick(tried)
            pending = asyncio.ensure_future(getattr(stub, method)(
                request, metadata=self.metadata if metadata is None else tuple(metadata),
                timeout=max(deadline - loop.time(), 0.1)))
            if peer is None:
                return await pending
            gone = asyncio.ensure_future(peer.down.wait())
            try:
                await asyncio.wait({pending, gone}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                pending.cancel()
                raise
            finally:
                gone.cancel()
            tried |= {peer}
            if pending.done() or not any(p.live for p in self.peers if p not in tried):
                return await pending
            pending.cancel()
            logger.warning("manager %s stopped answering heartbeats during %s: asking another", peer.address, method)

    async def wait_live(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until a heartbeat found a manager live; True if one is (at once
        with one manager only). A long stream opened next then goes to a manager known to answer."""
        if self.peers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._some_live.wait(), timeout_s)
        return not self.peers or self._some_live.is_set()

    def answered(self, peer: Peer | None, ok: bool) -> None:
        """Record a heartbeat outcome: ``peer`` (None = the shared channel) answered (``ok``) or failed."""
        now = time.monotonic()
        if ok:
            self.last_ok = now
        if peer is not None:
            peer.live = ok
            peer.last_ok = now if ok else peer.last_ok
            (peer.down.clear if ok else peer.down.set)()
            (peer.up.set if ok else peer.up.clear)()
            (self._some_live.set if any(p.live for p in self.peers) else self._some_live.clear)()

    def targets(self) -> list[tuple[Peer | None, Callable[..., Any]]]:
        """Where heartbeats go: every manager's own ``Heartbeat`` method, or the shared channel's."""
        if not self.peers:
            return [(None, self.shared.Heartbeat)]
        return [(p, p.stub.Heartbeat) for p in self.peers]

    async def close(self) -> None:
        for p in self.peers:
            await p.channel.close()
        await self.channel.close()
