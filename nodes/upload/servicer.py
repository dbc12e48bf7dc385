"""gRPC face of the upload node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from nodes.upload.service import Chunk, Header, Receiver, Stored
from pixelfox import errors
from pixelfox.grpcx.server import rpc
from pixelfox.v1 import manager_pb2, upload_pb2, upload_pb2_grpc

Ctx = grpc.aio.ServicerContext


class UploadServicer(upload_pb2_grpc.UploadServiceServicer):
    def __init__(
        self, receiver: Receiver, complete: Callable[[Stored], Awaitable[manager_pb2.CompleteUploadResponse]]
    ) -> None:
        self.receiver = receiver
        self.complete = complete

    @rpc()
    async def Upload(self, requests: AsyncIterator[upload_pb2.UploadRequest], ctx: Ctx) -> upload_pb2.UploadReceipt:
        first = await anext(requests, None)
        if first is None or not first.HasField("header"):
            raise errors.BadRequest("the first message must be the upload header")
        h = first.header
        header = Header(h.ticket, h.upload_id, h.size, h.sha256, h.filename)

        async def chunks() -> AsyncIterator[Chunk]:
            async for msg in requests:
                if not msg.HasField("chunk"):
                    raise errors.BadRequest("only chunks may follow the header")
                yield Chunk(msg.chunk.offset, msg.chunk.data, msg.chunk.crc32c)

        stored: Stored = await self.receiver.receive(header, chunks())
        reply: manager_pb2.CompleteUploadResponse = await self.complete(stored)
        return upload_pb2.UploadReceipt(upload_id=stored.upload_id, size=stored.size, sha256=stored.sha256,
                                        image=reply.image)

    @rpc()
    async def QueryUpload(self, req: upload_pb2.QueryUploadRequest, ctx: Ctx) -> upload_pb2.QueryUploadResponse:
        raise errors.NotFound("resumable uploads are not kept by this node yet; start the upload again")
