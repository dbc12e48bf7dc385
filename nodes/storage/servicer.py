"""``pixelfox.v1.StorageService`` on the wire: protobuf in, protobuf out, logic in :mod:`.service`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from nodes.storage.service import StorageService
from pixelfox import errors
from pixelfox.grpcx.server import caller, rpc, rpc_stream
from pixelfox.v1 import storage_pb2, storage_pb2_grpc


async def _data(requests: AsyncIterator[storage_pb2.PutRequest]) -> AsyncIterator[bytes]:
    async for req in requests:
        if req.WhichOneof("msg") != "data":
            raise errors.BadRequest("only data messages may follow the header")
        yield req.data


async def _drain(requests: AsyncIterator[storage_pb2.PutRequest], limit_s: float) -> None:
    """Read and drop what the client still sends before answering.

    grpc-python clients that are still writing when the server has already answered may
    report ``INTERNAL: Internal error from Core`` instead of the real status (the failed send
    overrides it), so a put that ends early (an error, or an idempotent re-put whose bytes
    are not needed) consumes the rest of the stream first, for at most ``limit_s`` seconds.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(limit_s):
            async for _ in requests:
                pass


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    def __init__(self, service: StorageService) -> None:
        self.service = service

    @rpc(cluster=False)  # the credential is checked below, after draining (see _drain)
    async def Put(
        self, request_iterator: AsyncIterator[storage_pb2.PutRequest], context: grpc.aio.ServicerContext
    ) -> storage_pb2.PutResponse:
        if not caller().cluster:
            await _drain(request_iterator, 5.0)
            raise errors.Unauthenticated("this method needs the cluster credential")
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("msg") != "header":
            raise errors.BadRequest("the first message must be the header")
        h = first.header
        try:
            stored = await self.service.put(
                h.key, _data(request_iterator), content_type=h.content_type, sha256=h.sha256, size=h.size
            )
        except errors.PixelfoxError:
            await _drain(request_iterator, 5.0)
            raise
        await _drain(request_iterator, 60.0)  # no-op unless the stream was not needed
        info = stored.info
        return storage_pb2.PutResponse(
            key=info.key, size=info.size, sha256=info.sha256, etag=info.etag, url=stored.url
        )

    @rpc_stream(cluster=True)
    async def Get(
        self, request: storage_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[storage_pb2.GetResponse]:
        info, chunks = await self.service.get(request.key, request.offset, request.length)
        first = True
        async for data in chunks:
            if first:
                yield storage_pb2.GetResponse(data=data, size=info.size, content_type=info.content_type)
                first = False
            else:
                yield storage_pb2.GetResponse(data=data)
        if first:  # empty range: still say how big the object is
            yield storage_pb2.GetResponse(size=info.size, content_type=info.content_type)

    @rpc(cluster=True)
    async def Stat(
        self, request: storage_pb2.StatRequest, context: grpc.aio.ServicerContext
    ) -> storage_pb2.StatResponse:
        info = await self.service.stat(request.key)
        if info is None:
            return storage_pb2.StatResponse(exists=False)
        return storage_pb2.StatResponse(
            exists=True, size=info.size, content_type=info.content_type, sha256=info.sha256, etag=info.etag
        )

    @rpc(cluster=True)
    async def Delete(
        self, request: storage_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> storage_pb2.DeleteResponse:
        return storage_pb2.DeleteResponse(deleted=await self.service.delete(request.key))
