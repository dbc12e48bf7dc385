"""Issue 5's manager calls from the web node, and image reads through the Redis read model.

:func:`call` runs any ``ManagerService`` method with the caller's metadata and maps wire errors
to :class:`~pixelfox.errors.PixelfoxError`. :func:`load_image` reads an image the way pages
and the JSON API do: from the read model (:mod:`pixelfox.readmodel`) when it holds the public
image, else from the manager (filling the read model for a public, ready image), so public
pages keep rendering while the manager restarts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
import redis.exceptions
from aiohttp import web

from pixelfox import errors, readmodel
from pixelfox.v1 import common_pb2
from web.cluster import RPC_TIMEOUT_S, manager_error
from web.keys import MANAGER, REDIS

logger = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str]]


async def call(
    request: web.Request, method: str, req: Any, metadata: Metadata, timeout_s: float = RPC_TIMEOUT_S,
    *, optional: bool = False,
) -> Any:
    """``ManagerService.<method>(req)`` as the caller in ``metadata``; raises PixelfoxError subclasses
    (:func:`web.cluster.manager_error`: Timeout saying so when the manager gave no answer in ``timeout_s``).

    ``optional``: None when the manager does not have ``method`` (``UNIMPLEMENTED``: a manager older
    than this web node, during a rolling upgrade), for a call the web node can do without."""
    stub = request.app[MANAGER].stub
    try:
        return await getattr(stub, method)(req, metadata=tuple(metadata), timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        if optional and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise manager_error(exc, timeout_s) from exc


def gone(entry: readmodel.Entry) -> errors.NotFound:
    """The 404 of an image the read model marks ``deleted``: when it expired (the expiry sweeper
    deleted it), or that it was deleted."""
    if entry.expired_at:
        when = datetime.fromtimestamp(entry.expired_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return errors.NotFound(f"this image expired at {when} and was deleted, as its uploader asked")
    return errors.NotFound("this image was deleted")


async def told(request: web.Request, slug: str, exc: errors.NotFound) -> errors.NotFound:
    """The manager's "no such image" ``exc`` for ``slug`` as the read model's marker tells it
    (:func:`gone`: deleted, or expired and when), or ``exc`` itself without one (or without Redis)."""
    entry = None
    with contextlib.suppress(redis.exceptions.RedisError, OSError):
        entry = await readmodel.read(request.app[REDIS], slug)
    return gone(entry) if entry is not None and entry.kind == "deleted" else exc


async def load_image(request: web.Request, slug: str, metadata: Metadata, *, fresh: bool = False
                     ) -> common_pb2.Image:
    """The image for this caller; NotFound for unknown, deleted (:func:`gone`: saying so, or that it
    expired, while the read model's marker lives) or someone else's private image.

    Public images come from the shared read model, which holds what every visitor may see;
    ``fresh=True`` asks the manager instead, whose answer also carries what only this caller may
    see (the owner's GPS ``location``); its "no such image" is then told as the marker says (one
    read, on that 404 only), as the read-model path does: the owner heard "no such image" for an
    image a visitor heard was deleted."""
    store = request.app[REDIS]
    entry = None
    if fresh:
        try:
            return await _from_manager(request, slug, metadata)
        except errors.NotFound as exc:
            raise await told(request, slug, exc) from exc
    try:
        entry = await readmodel.read(store, slug)
    except (redis.exceptions.RedisError, OSError):
        logger.warning("read model unavailable for %s", slug)
    if entry is not None and entry.kind == "image" and entry.image is not None:
        return entry.image
    if entry is not None and entry.kind == "deleted":
        raise gone(entry)
    return await _from_manager(request, slug, metadata, entry)


async def _from_manager(request: web.Request, slug: str, metadata: Metadata,
                        seen: readmodel.Entry | None = None) -> common_pb2.Image:
    image: common_pb2.Image = await request.app[MANAGER].get_image(slug, metadata)
    with contextlib.suppress(redis.exceptions.RedisError, OSError):
        await readmodel.fill(request.app[REDIS], image, seen)  # stores only what everyone may see
    return image
