"""``python -m nodes.storage``: a storage node (gRPC StorageService + HTTP origin + metrics).

Settings load once here (``--print-config`` prints them, secrets redacted). The gRPC server
and the HTTP origin serve at once; registration with the manager retries in the background
(:class:`pixelfox.node.Agent`), so the node keeps serving reads and writes while the manager
is unreachable. SIGTERM: readiness fails, gRPC drains, then the HTTP origin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import socket
import sys

from nodes.storage import http_worker
from nodes.storage.config import StorageNodeSettings
from nodes.storage.http import HttpOrigin, Origin, bind
from nodes.storage.service import StorageService
from nodes.storage.servicer import StorageServicer
from pixelfox import errors, logs, signing
from pixelfox.config import load_settings, print_config, require_secret
from pixelfox.grpcx.server import GrpcServer
from pixelfox.node import NodeIdentity, run_node, start_metrics
from pixelfox.storage.fs import FsStore
from pixelfox.storage.s3 import S3Store
from pixelfox.v1 import common_pb2, storage_pb2, storage_pb2_grpc

logger = logging.getLogger("nodes.storage")

SERVICE_NAME = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name


async def _start_http(service: StorageService, settings: StorageNodeSettings) -> HttpOrigin:
    """The HTTP origin on ``settings.http`` (a fixed port when extra worker processes will share it)."""
    url_keys = signing.keys_from(settings.cluster.secret.get_secret_value(), settings.url_signing)
    sock = bind(settings.http.host, settings.http.port, reuse_port=settings.http_workers > 1)
    return await HttpOrigin(Origin(service, url_keys, settings.sign_originals), sock).start()


async def open_store(settings: StorageNodeSettings) -> FsStore | S3Store:
    """The pool's store as the settings select it: ``fs`` (``data_dir``) or ``s3`` (``s3.*``)."""
    if settings.backend == "s3":
        return await S3Store(settings.s3).start()
    return FsStore(settings.data_dir)


async def main(settings: StorageNodeSettings) -> None:
    node_id = settings.node_id
    store = await open_store(settings)
    try:
        used = await store.scan()
        counted = True
    except errors.Unavailable as exc:  # an S3 pool down or refusing us: serve (not ready) until it answers
        logger.warning("pool %s cannot be read (%s): this node reports not ready until it answers, and counts "
                       "its bytes then", settings.pool, exc)
        used, counted = 0, False
    service = StorageService(store, root=getattr(store, "root", None), pool=settings.pool)
    service.accel_redirect = settings.accel_redirect if settings.backend == "fs" else ""
    await service.refresh_usage()
    where = store.root if isinstance(store, FsStore) else f"{settings.s3.endpoint_url}/{settings.s3.bucket}"
    logger.info("pool %s (%s) at %s %s", settings.pool, settings.backend, where,
                f"holds {used} bytes" if counted else "not counted yet")

    grpc_server = GrpcServer(
        [(storage_pb2_grpc.add_StorageServiceServicer_to_server, StorageServicer(service), SERVICE_NAME)],
        host=settings.grpc.host,
        port=settings.grpc.port,
        secret=settings.cluster.secret.get_secret_value(),
        max_message_bytes=settings.grpc.max_message_bytes,
        reflection_on=settings.grpc.reflection,
    )
    origin = await _start_http(service, settings)
    http_port = origin.port
    workers = http_worker.spawn(settings, http_port)
    service.public_url = (settings.http.public_url or f"http://{settings.http.host}:{http_port}").rstrip("/")
    metrics_url = start_metrics(settings.grpc.host, settings.metrics_port)
    ident = NodeIdentity(
        role=common_pb2.NODE_ROLE_STORAGE,
        node_id=node_id,
        grpc_address=f"{settings.grpc.advertise_host or settings.grpc.host}:{grpc_server.port}",
        http_url=service.public_url,
        metrics_url=metrics_url,
        # fs:HOST:DEVICE (fs:s3:ENDPOINT/BUCKET/PREFIX): pools on one disk share its free space (the manager
        # sums it once)
        capabilities=[f"pool:{settings.pool}", f"backend:{settings.backend}", f"fs:{service.fs}"],
    )
    logger.info("HTTP origin %s on port %d, metrics %s", service.public_url, http_port, metrics_url or "off")

    async def drain() -> None:
        service.draining = True

    try:
        await run_node(
            settings,
            grpc_server,
            ident,
            service.load,
            background=[lambda stop: service.usage_loop(stop, settings.usage_refresh_s, counted)],
            on_drain=drain,
            ready=service.ready,
        )
    finally:
        await asyncio.to_thread(http_worker.stop, workers)
        await origin.stop()
        await store.close()


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nodes.storage", description=__doc__.splitlines()[0])
    parser.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    args = parser.parse_args(argv)
    settings = load_settings(StorageNodeSettings)
    settings.node_id = settings.node_id or f"storage-{socket.gethostname()}"  # as --print-config shows it
    if args.print_config:
        print_config(settings)
        return
    require_secret(settings)
    logs.configure(settings.log, settings.node_id)
    try:  # uvloop (optional) speeds up the HTTP origin (docs/benchmarks.md)
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None and settings.uvloop:
        uvloop.run(main(settings))
    else:
        asyncio.run(main(settings))
    gc.freeze()  # skip the interpreter's last full collection at exit, as pixelfox.node.node_main does


if __name__ == "__main__":
    sys.exit(cli())
