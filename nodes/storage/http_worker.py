"""Extra HTTP origin processes of one storage node (``PIXELFOX_HTTP_WORKERS`` > 1).

Python serves one request at a time per process, so a node can run its HTTP origin in
several processes sharing one port (``SO_REUSEPORT``: the kernel spreads connections over
them). The node's main process keeps gRPC, registration, heartbeats and the pool's
bookkeeping and serves HTTP too; it starts ``workers - 1`` of these with the same settings
and stops them when it stops (they also get SIGTERM if the main process dies:
``PR_SET_PDEATHSIG``). A worker only reads: it never sweeps temp files (``scan``) or writes.
Objects deleted through the main process are evicted from the main process's info cache; a
worker notices when the file is gone (404) or, for S3 pools, when the first read fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys

from nodes.storage.config import StorageNodeSettings
from nodes.storage.http import HttpOrigin, Origin, bind
from nodes.storage.service import StorageService
from pixelfox import logs, signing
from pixelfox.config import load_settings
from pixelfox.storage.fs import FsStore
from pixelfox.storage.s3 import S3Store

logger = logging.getLogger("nodes.storage.http_worker")

PR_SET_PDEATHSIG = 1


def spawn(settings: StorageNodeSettings, port: int) -> list[subprocess.Popen[bytes]]:
    """Start ``settings.http_workers - 1`` worker processes on ``port`` (inheriting this environment)."""
    env = os.environ | {"PIXELFOX_HTTP__PORT": str(port)}
    return [subprocess.Popen([sys.executable, "-m", "nodes.storage.http_worker"], env=env)
            for _ in range(max(0, settings.http_workers - 1))]


def stop(procs: list[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> None:
    """SIGTERM every worker, SIGKILL those still running after ``timeout_s``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def serve(settings: StorageNodeSettings) -> None:
    """Serve ``/o/<key>``, ``/healthz`` and ``/readyz`` on the shared port until SIGTERM."""
    store: FsStore | S3Store = (
        await S3Store(settings.s3).start() if settings.backend == "s3" else FsStore(settings.data_dir))
    service = StorageService(store, root=getattr(store, "root", None), pool=settings.pool,
                             public_url=settings.http.public_url)
    service.accel_redirect = settings.accel_redirect if settings.backend == "fs" else ""
    keys = signing.keys_from(settings.cluster.secret.get_secret_value(), settings.url_signing)
    origin = await HttpOrigin(Origin(service, keys, settings.sign_originals),
                              bind(settings.http.host, settings.http.port, reuse_port=True)).start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        service.draining = True
        await origin.stop()
        await store.close()


def cli() -> None:
    with contextlib.suppress(OSError, AttributeError):  # die with the main process (Linux)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    settings = load_settings(StorageNodeSettings)
    logs.configure(settings.log, f"{settings.node_id}-http")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    cli()
