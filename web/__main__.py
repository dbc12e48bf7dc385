"""``python -m web``: run one web node until SIGTERM/SIGINT.

On a signal the node reports DRAINING to the manager and fails ``/readyz`` for
``drain_delay_s`` seconds (so a balancer stops sending traffic), then stops accepting
connections and gives in-flight requests their grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import warnings

from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning

from pixelfox import logs
from pixelfox.config import load_settings, log_unknown_settings, print_config, require_secret
from pixelfox.managerlink import ManagerLink
from pixelfox.node import Agent, Load, NodeIdentity, start_metrics
from pixelfox.v1 import common_pb2
from web.app import create_app
from web.config import WebSettings
from web.keys import MANAGER, STATE

logger = logging.getLogger("web")
CAPACITY = 1000  # concurrent requests reported as capacity in heartbeats


async def serve(settings: WebSettings) -> None:
    app = create_app(settings)
    # one link for the heartbeats and the calls: calls go to the managers whose heartbeats are answered
    link = ManagerLink(settings)
    app[MANAGER].use(link)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port)
    await site.start()
    port = settings.http.port
    server = site._server
    if server is not None and getattr(server, "sockets", None):
        port = server.sockets[0].getsockname()[1]
    state = app[STATE]
    state.public_url = settings.base_url(port)
    metrics_url = start_metrics(settings.http.host, settings.metrics_port)
    ident = NodeIdentity(
        role=common_pb2.NODE_ROLE_WEB,
        node_id=settings.node_id,
        grpc_address="",
        http_url=state.public_url,
        metrics_url=metrics_url,
    )
    agent = Agent(settings, ident, lambda: Load(in_use=state.in_flight, capacity=CAPACITY), link=link)
    await agent.start()
    logger.info(
        "%s serving HTTP on %s (bound %s:%s)", settings.node_id, state.public_url, settings.http.host, port
    )
    term = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, term.set)
    try:
        await agent.wait(term)
        if agent.refusal is None:
            logger.info("%s draining", settings.node_id)
            state.draining = True
            agent.set_draining()
            await asyncio.sleep(settings.drain_delay_s)
    finally:
        await runner.cleanup()
        # a clean stop: shown stopped, not as a node down (never for a refused node: the id is another's)
        await agent.stop(leave=term.is_set() and agent.refusal is None)
        await link.close()
        logger.info("%s stopped", settings.node_id)
    if agent.refusal is not None:
        raise agent.refusal  # exit with the manager's reason (pixelfox.node.Agent)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m web", description="PixelFox web node")
    parser.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    args = parser.parse_args(argv)
    settings = load_settings(WebSettings)
    if args.print_config:
        print_config(settings)
        return
    require_secret(settings)
    logs.configure(settings.log, settings.node_id)
    log_unknown_settings(WebSettings)
    # aiohttp-session 2.12 keeps its state under str request keys; nothing for us to fix
    warnings.filterwarnings("ignore", category=NotAppKeyWarning)
    asyncio.run(serve(settings))
    gc.freeze()  # skip the interpreter's last full collection at exit, as pixelfox.node.node_main does


if __name__ == "__main__":
    main()
