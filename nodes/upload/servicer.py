"""gRPC face of the upload node."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from nodes.upload.service import Chunk, Header, Receiver
from pixelfox import errors
from pixelfox.grpcx.server import rpc
from pixelfox.storage.keys import declared_sha256
from pixelfox.v1 import upload_pb2, upload_pb2_grpc

Ctx = grpc.aio.ServicerContext


class UploadServicer(upload_pb2_grpc.UploadServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    @rpc()
    async def Upload(self, requests: AsyncIterator[upload_pb2.UploadRequest], ctx: Ctx) -> upload_pb2.UploadReceipt:
        first = await anext(requests, None)
        if first is None or not first.HasField("header"):
            raise errors.BadRequest("the first message must be the upload header")
        h = first.header
        # the rule and words of CreateUpload and POST /api/v1/uploads (lower case, else BadRequest), checked
        # before the ticket, the upload's state or the staged file is touched
        sha256 = declared_sha256(h.sha256)
        header = Header(h.ticket, h.upload_id, h.size, sha256, h.filename)

        async def chunks() -> AsyncIterator[Chunk]:
            async for msg in requests:
                if not msg.HasField("chunk"):
                    raise errors.BadRequest("only chunks may follow the header")
                chunk = Chunk(msg.chunk.offset, msg.chunk.data, msg.chunk.crc32c)
                del msg  # the parsed message holds its own copy of the bytes: not kept while the chunk is written
                yield chunk

        reply = await self.receiver.receive(header, chunks())
        return upload_pb2.UploadReceipt(upload_id=header.upload_id, size=header.size, sha256=reply.image.sha256,
                                        image=reply.image, deduplicated=reply.deduplicated,
                                        deletion_url=reply.deletion_url)

    @rpc()
    async def QueryUpload(self, req: upload_pb2.QueryUploadRequest, ctx: Ctx) -> upload_pb2.QueryUploadResponse:
        st = await self.receiver.query(req.ticket, req.upload_id, idle=True)
        return upload_pb2.QueryUploadResponse(offset=st.offset, size=st.size, complete=st.status == "complete",
                                              image_slug=st.slug)
