"""``python -m nodes.proc``: run a processing node."""

from __future__ import annotations

from nodes.proc.config import ProcSettings
from nodes.proc.service import Processor
from nodes.proc.worker import Worker
from pixelfox import imaging
from pixelfox.grpcx.server import GrpcServer
from pixelfox.node import Load, ManagerLink, NodeIdentity, node_main, run_node, start_metrics
from pixelfox.v1 import common_pb2


def recipe_from(settings: ProcSettings) -> imaging.Recipe:
    return imaging.Recipe(webp_quality=settings.webp_quality, avif_quality=settings.avif_quality,
                          avif_speed=settings.avif_speed, jpeg_quality=settings.jpeg_quality)


def limits_from(settings: ProcSettings) -> imaging.Limits:
    """The core's limits from ``PIXELFOX_LIMITS__*`` (``timeout_s`` is the per-image time limit)."""
    lim = settings.limits
    return imaging.Limits(max_pixels=lim.max_pixels, max_frames=lim.max_frames,
                          max_input_bytes=lim.max_upload_bytes, max_animation_bytes=lim.max_animation_bytes,
                          timeout_s=lim.process_timeout_s)


async def serve(settings: ProcSettings) -> None:
    node_id = settings.node_id or "proc1"
    secret = settings.cluster.secret.get_secret_value()
    processor = Processor(secret, settings.workers, recipe_from(settings), limits_from(settings))
    link = ManagerLink(settings)
    caps = ["jpeg", "png", "gif", "webp", "avif", *(["gpu"] if settings.gpu else [])]
    worker = Worker(node_id, link, processor, settings.workers, caps, trim_idle_s=settings.trim_idle_s)
    # The proc node serves only health (and reflection) over gRPC: it takes work over its own stream.
    server = GrpcServer([], host=settings.grpc.host, port=settings.grpc.port, secret=secret,
                        reflection_on=settings.grpc.reflection)
    host = settings.grpc.advertise_host or settings.grpc.host
    ident = NodeIdentity(common_pb2.NODE_ROLE_PROC, node_id, f"{host}:{server.port}",
                         metrics_url=start_metrics(settings.grpc.host, settings.metrics_port), capabilities=caps)

    def load() -> Load:
        return Load(in_use=len(worker.running), capacity=settings.workers)

    try:
        await run_node(settings, server, ident, load, background=[worker.run],
                       on_drain=lambda: worker.drain(settings.grpc.grace_s), link=link)
    finally:
        processor.close()
        await link.close()


def main() -> None:
    node_main("python -m nodes.proc", "PixelFox processing node", ProcSettings, serve, "proc1")


if __name__ == "__main__":
    main()
