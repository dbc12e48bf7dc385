"""The upload node's gRPC server bounds what a client may send ahead of the node's reading (issue 4).

With gRPC's default BDP probing the per-stream windows grew during a burst until each client had
sent its whole file, which then sat in the node's memory; the upload node fixes the window
(``stream_window_bytes``). A stream whose handler does not read must not get more than about
one window (here less than one 256 KiB chunk plus framing) through to the server.
"""

from __future__ import annotations

import asyncio

import grpc

from nodes.upload.__main__ import stream_window_options
from nodes.upload.config import UploadSettings
from pixelfox.grpcx.server import GrpcServer
from pixelfox.v1 import upload_pb2, upload_pb2_grpc

CHUNK = 256 * 1024


class _NotReading(upload_pb2_grpc.UploadServiceServicer):
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.got = 0

    async def Upload(self, requests, context):  # type: ignore[no-untyped-def]
        await self.gate.wait()  # a node busy elsewhere: the stream's bytes wait in gRPC's buffers
        async for msg in requests:
            self.got += len(msg.chunk.data)
        return upload_pb2.UploadReceipt(size=self.got)


async def _chunks_sent_ahead(window: int, total: int = 16) -> tuple[int, int]:
    servicer = _NotReading()
    server = GrpcServer([(upload_pb2_grpc.add_UploadServiceServicer_to_server, servicer, "pixelfox.v1.UploadService")],
                        host="127.0.0.1", port=0, secret="s", reflection_on=False,
                        options=stream_window_options(window))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            call = upload_pb2_grpc.UploadServiceStub(ch).Upload()
            ahead = 0  # writes that went through before the handler read anything
            for i in range(total):
                msg = upload_pb2.UploadRequest(chunk=upload_pb2.UploadChunk(offset=i * CHUNK, data=b"x" * CHUNK))
                write = asyncio.ensure_future(call.write(msg))
                done, _ = await asyncio.wait({write}, timeout=1.0)
                if not servicer.gate.is_set():
                    if done:
                        ahead += 1
                    else:  # flow control holds the client back: let the handler read
                        servicer.gate.set()
                await write
            servicer.gate.set()
            await call.done_writing()
            reply = await call
            return ahead, reply.size
    finally:
        await server.stop(0)


def test_a_stream_that_is_not_read_cannot_send_its_file_ahead() -> None:
    window = UploadSettings.model_fields["stream_window_bytes"].default
    assert window > 0
    ahead, received = asyncio.run(_chunks_sent_ahead(window))
    assert ahead * CHUNK <= window  # at most a window's worth before the node reads (BDP: 15 chunks here)
    assert received == 16 * CHUNK  # and the stream still delivers every byte once read
