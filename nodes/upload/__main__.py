"""``python -m nodes.upload``: run an upload node."""

from __future__ import annotations

import asyncio
import socket

import redis.asyncio as aioredis
from aiohttp import web

from nodes.upload import liveness
from nodes.upload.config import UploadSettings
from nodes.upload.service import Receiver, Stored
from nodes.upload.servicer import UploadServicer
from nodes.upload.sweeper import sweep_forever
from nodes.upload.tus import make_app
from pixelfox import errors, redisx, tickets
from pixelfox.grpcx.client import map_rpc_errors
from pixelfox.grpcx.server import GrpcServer
from pixelfox.node import Load, ManagerLink, NodeIdentity, node_main, run_node, start_metrics
from pixelfox.uploadstate import UploadStates
from pixelfox.v1 import common_pb2, manager_pb2, upload_pb2_grpc


def connect_redis(settings: UploadSettings) -> aioredis.Redis:
    """Redis for upload state; in single mode a blocking pool of ``redis_connections`` connections, so a
    burst of streams waits for a connection instead of failing with "Too many connections"."""
    if redisx.mode(settings.redis.url) != "single":
        return redisx.connect(settings.redis)
    pool = aioredis.BlockingConnectionPool.from_url(settings.redis.url, max_connections=settings.redis_connections,
                                                    timeout=30, health_check_interval=10)
    return aioredis.Redis(connection_pool=pool)


def stream_window_options(window: int) -> list[tuple[str, int]]:
    """gRPC server args for a fixed per-stream receive window of ``window`` bytes (0: gRPC's default, windows
    grown by BDP probing). With BDP probing the windows of a burst of uploads on loopback grew until each
    client had sent its whole file, held in the node's memory until read (issue 4, docs/benchmarks.md)."""
    if window <= 0:
        return []
    return [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", window)]


async def serve(settings: UploadSettings) -> None:
    node_id = settings.node_id or "upload1"
    secret = settings.cluster.secret.get_secret_value()
    link = ManagerLink(settings)

    async def place(size: int) -> list[common_pb2.Node]:
        async with map_rpc_errors():
            reply = await link.call("PlaceObject", manager_pb2.PlaceObjectRequest(size=size), deadline_s=10)
        return list(reply.nodes)

    async def complete(s: Stored) -> manager_pb2.CompleteUploadResponse:
        req = manager_pb2.CompleteUploadRequest(
            upload_id=s.upload_id, ticket=s.ticket, sha256=s.sha256, size=s.size, format=s.info.format,
            mime=s.info.mime, width=s.info.width, height=s.info.height, frames=s.info.frames,
            orientation=s.info.orientation, original_key=s.key, storage_node_ids=s.storage_node_ids,
            upload_node_id=node_id,
        )
        async with map_rpc_errors():
            # a manager that froze meanwhile held it for the 30 s: another one is asked (ManagerLink.call)
            return await link.call("CompleteUpload", req, deadline_s=30)

    async def abandon(upload_id: str, ticket: str) -> None:
        async with map_rpc_errors():
            await link.stub.AbandonUpload(manager_pb2.AbandonUploadRequest(upload_id=upload_id, ticket=ticket),
                                          metadata=link.metadata, timeout=10)

    async def fail(upload_id: str, error: errors.PixelfoxError) -> None:
        req = manager_pb2.FailUploadRequest(upload_id=upload_id, error_code=error.code, error_message=str(error)[:500])
        async with map_rpc_errors():
            await link.call("FailUpload", req, deadline_s=10)

    redis = connect_redis(settings)
    states = UploadStates(redis, ttl_s=settings.limits.upload_ttl_s, lock_ttl_ms=int(settings.lock_ttl_s * 1000))
    receiver = Receiver(node_id, settings.staging_dir, settings.limits, tickets.derive_key(secret), place, secret,
                        settings.max_concurrent, states, complete, abandon, fail)
    server = GrpcServer(
        [(upload_pb2_grpc.add_UploadServiceServicer_to_server, UploadServicer(receiver),
          "pixelfox.v1.UploadService")],
        host=settings.grpc.host, port=settings.grpc.port, secret=secret,
        max_message_bytes=settings.grpc.max_message_bytes, reflection_on=settings.grpc.reflection,
        options=stream_window_options(settings.stream_window_bytes),
    )
    host = settings.grpc.advertise_host or settings.grpc.host
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.http.host, settings.http.port))
    http_url = settings.http.public_url or f"http://{settings.http.host}:{sock.getsockname()[1]}"
    runner = web.AppRunner(make_app(receiver, http_url, lambda: server.serving), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    ident = NodeIdentity(common_pb2.NODE_ROLE_UPLOAD, node_id, f"{host}:{server.port}", http_url=http_url,
                         metrics_url=start_metrics(settings.grpc.host, settings.metrics_port))

    def load() -> Load:
        return Load(in_use=receiver.active, capacity=receiver.max_concurrent, free_bytes=receiver.free_bytes())

    # until the process ends (after the drain): other nodes take a dead node's upload locks over at once
    alive = asyncio.create_task(liveness.keep_alive(states, node_id, ident.grpc_address))
    try:
        await run_node(settings, server, ident, load, background=[
            lambda stop: sweep_forever(receiver, settings.sweep_interval_s, settings.limits.upload_ttl_s, stop)],
            link=link)
    finally:
        await runner.cleanup()
        alive.cancel()
        await asyncio.gather(alive, return_exceptions=True)
        await link.close()
        await redis.aclose()


def main() -> None:
    node_main("python -m nodes.upload", "PixelFox upload node", UploadSettings, serve, "upload1")


if __name__ == "__main__":
    main()
