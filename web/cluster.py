"""The web node's view of the manager: one gRPC channel, the cluster secret, typed calls.

Every call goes through :func:`manager_errors`, so callers see :class:`~pixelfox.errors.PixelfoxError`
subclasses, never ``AioRpcError``; a manager that does not answer in time is a 504 that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pixelfox import errors
from pixelfox.client.uploader import upload_file
from pixelfox.config import NodeSettings
from pixelfox.errors import PixelfoxError
from pixelfox.grpcx.auth import api_key_metadata, node_metadata
from pixelfox.grpcx.client import channel, error_from_rpc, trailer
from pixelfox.managerlink import ManagerLink
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc, upload_pb2

Metadata = Sequence[tuple[str, str]]
RPC_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.2
UPLOAD_URLS_TTL_S = 10.0  # how long the upload nodes' URLs (for the upload page's CSP) are reused
MANAGER = "the cluster's manager"  # how a user is told which part did not answer (never its address)


def manager_error(exc: grpc.aio.AioRpcError, timeout_s: float) -> PixelfoxError:
    """The :class:`~pixelfox.errors.PixelfoxError` of a failed call to the manager made with a deadline of
    ``timeout_s`` seconds. A deadline that passed with no answer (no ``pixelfox-error-code``: the manager
    is frozen, overloaded or cut off) is :meth:`~pixelfox.errors.Timeout.no_answer`, whose message the
    user sees (a plain "timed out" told them nothing); anything else is as the manager raised it."""
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not trailer(exc, errors.ERROR_CODE_KEY):
        return errors.Timeout.no_answer(MANAGER, timeout_s)
    return error_from_rpc(exc)


@contextlib.asynccontextmanager
async def manager_errors(timeout_s: float = RPC_TIMEOUT_S) -> AsyncIterator[None]:
    """Re-raise ``AioRpcError`` inside the block as :func:`manager_error` words it."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise manager_error(exc, timeout_s) from exc


class Manager:
    """Calls to ``ManagerService`` on behalf of a web node (cluster credential + acting user).

    With several managers the calls go over a :class:`~pixelfox.managerlink.ManagerLink`, to those
    whose last heartbeat was answered, so a frozen manager (its sockets still accept) does not hold
    every other page for :data:`RPC_TIMEOUT_S`. The web node's heartbeat :class:`~pixelfox.node.Agent`
    shares the link (:meth:`use`; an app started alone, as in tests, makes its own). With one
    manager the calls use a channel of their own (see :meth:`open`).
    """

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.address = settings.cluster.manager.strip()
        self._secret = settings.cluster.secret.get_secret_value()
        self.link: ManagerLink | None = None
        self._own_link = False
        self._channel: grpc.aio.Channel | None = None
        self._upload_urls: list[str] = []
        self._upload_urls_at = -UPLOAD_URLS_TTL_S

    def use(self, link: ManagerLink) -> None:
        """Call through ``link`` (the heartbeat agent's, which the caller closes); before :meth:`open`."""
        self.link = link

    def open(self) -> None:
        """Create the link unless :meth:`use` gave one, and the calls' own channel; call inside the
        running loop (grpc.aio binds to it)."""
        if self.link is None:
            self.link, self._own_link = ManagerLink(self.settings), True
        # one manager: calls go over a channel of their own, not the link's, whose heartbeats keep it in
        # reconnect back-off while the manager is down (a call in the second after its restart failed
        # "connection refused"); an idle channel connects at the call
        self._channel = channel(self.address)
        self._own_stub = manager_pb2_grpc.ManagerServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    @property
    def stub(self) -> Any:
        """A ``ManagerServiceStub`` for the next call: with several managers a live one's (see
        :meth:`ManagerLink.pick`; a read is asked again of another one should that one freeze while it waits:
        :attr:`ManagerLink.read_stub`), with one this node's call channel."""
        if self.link is None:
            raise RuntimeError("Manager.open() was not called")
        return self.link.read_stub if self.link.peers else self._own_stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self.link is not None and self._own_link:
            await self.link.close()
        self.link, self._own_link = None, False

    def as_user(self, user_id: str = "") -> Metadata:
        """Node metadata, acting for ``user_id`` ("" = anonymous)."""
        return node_metadata(self._secret, acting_user=user_id)

    @staticmethod
    def as_api_key(key: str) -> Metadata:
        return api_key_metadata(key)

    async def create_user(self, name: str, password: str) -> manager_pb2.User:
        async with manager_errors():
            return await self.stub.CreateUser(
                manager_pb2.CreateUserRequest(name=name, password=password),
                metadata=self.as_user(),
                timeout=RPC_TIMEOUT_S,
            )

    async def verify_password(self, name: str, password: str) -> manager_pb2.User:
        async with manager_errors():
            return await self.stub.VerifyPassword(
                manager_pb2.VerifyPasswordRequest(name=name, password=password),
                metadata=self.as_user(),
                timeout=RPC_TIMEOUT_S,
            )

    async def who_am_i(self, api_key: str) -> manager_pb2.User:
        async with manager_errors():
            return await self.stub.WhoAmI(
                manager_pb2.WhoAmIRequest(), metadata=self.as_api_key(api_key), timeout=RPC_TIMEOUT_S
            )

    async def create_api_key(self, user_id: str, label: str) -> manager_pb2.CreateApiKeyResponse:
        async with manager_errors():
            return await self.stub.CreateApiKey(
                manager_pb2.CreateApiKeyRequest(label=label),
                metadata=self.as_user(user_id),
                timeout=RPC_TIMEOUT_S,
            )

    async def get_image(self, slug: str, metadata: Metadata) -> common_pb2.Image:
        async with manager_errors():
            return await self.stub.GetImage(
                manager_pb2.GetImageRequest(slug=slug), metadata=tuple(metadata), timeout=RPC_TIMEOUT_S
            )

    async def list_images(self, user_id: str, limit: int, before: str = "") -> list[common_pb2.Image]:
        async with manager_errors():
            reply = await self.stub.ListImages(
                manager_pb2.ListImagesRequest(limit=limit, before=before),
                metadata=self.as_user(user_id),
                timeout=RPC_TIMEOUT_S,
            )
        return list(reply.images)

    async def upload(
        self, metadata: Metadata, path: Path, filename: str, content_type: str, expire_after_s: int = 0,
        title: str = "", visibility: str = "",
    ) -> upload_pb2.UploadReceipt:
        """Upload the file at ``path`` as the caller in ``metadata`` (see
        :func:`pixelfox.client.uploader.upload_file`; ``visibility`` "" or ``public``, ``private``); the receipt:
        the new image, status ``processing``, or with ``deduplicated`` the caller's existing image of these
        bytes, unchanged."""
        return await upload_file(self.stub, metadata, path, filename=filename, content_type=content_type,
                                 expire_after_s=expire_after_s, title=title, visibility=visibility)

    async def wait_ready(
        self, image: common_pb2.Image, metadata: Metadata, wait_s: float
    ) -> common_pb2.Image:
        """Poll ``GetImage`` every 0.2 s until the image leaves ``processing`` or ``wait_s`` runs out."""
        deadline = time.monotonic() + wait_s
        while image.status == common_pb2.IMAGE_STATUS_PROCESSING and time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL_S)
            image = await self.get_image(image.slug, metadata)
        return image

    async def upload_urls(self) -> list[str]:
        """The healthy upload nodes' HTTP (tus) base URLs (their registered ``http_url``), sorted.

        The upload page's ``connect-src`` lists their origins so tus-js-client may PATCH there. Cached
        for :data:`UPLOAD_URLS_TTL_S` seconds; an unreachable manager gives the last list (or []).
        """
        now = time.monotonic()
        if now - self._upload_urls_at < UPLOAD_URLS_TTL_S:
            return self._upload_urls
        try:
            async with manager_errors(2.0):
                reply = await self.stub.ListNodes(manager_pb2.ListNodesRequest(), metadata=self.as_user(),
                                                  timeout=2.0)
        except PixelfoxError:
            return self._upload_urls
        self._upload_urls = sorted({n.http_url for n in reply.nodes
                                if n.role == common_pb2.NODE_ROLE_UPLOAD and n.healthy and n.http_url})
        self._upload_urls_at = now
        return self._upload_urls

    async def ready(self, timeout_s: float = 1.0) -> bool:
        """True when the manager's health service answers SERVING."""
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=""), metadata=self.as_user(), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
