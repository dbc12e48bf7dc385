"""Is the node that holds a node id still there? One short gRPC health ``Check`` at its address.

The registry asks (:meth:`nodes.manager.registry.Registry.register`) before it refuses a node id whose
record looks live to a node at another address: a node that crashed and came back at a new address (a
container restart gets a new IP, a gRPC port of 0 a new port) used to be refused until the old
record's heartbeat was ``node_timeout_s`` old, and under a supervisor that restarts it that was a
restart loop. Every gRPC node serves the standard health service, and answers SERVING for its own
process' instance entry (:func:`pixelfox.grpcx.server.instance_service`), so the answer tells three
cases apart:

* the holder answers (any status: SERVING, NOT_SERVING while its dependencies are down or it drains)
  for its instance, or for the whole server when its record has no instance (an older node): it is
  alive, and the id stays its;
* nothing answers within :data:`PROBE_TIMEOUT_S` (connection refused, no route, a frozen process whose
  socket still accepts): it is gone;
* another server answers there, without the holder's instance (``NOT_FOUND``), or with no health
  service at all (``UNIMPLEMENTED``): the holder is gone, something else has its address.

Web nodes have no gRPC address (their record's address is a public URL, often a balancer shared by
every web node, so an HTTP answer there tells nothing about one node): they are not asked, and their
id is kept for ``node_timeout_s`` as before. The health service needs no cluster credential.
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nodes.manager.registry import NodeRecord
from pixelfox.grpcx.server import instance_service

logger = logging.getLogger(__name__)

#: seconds the manager waits for the holder's answer (a Register waits for it; nodes allow it 5 s)
PROBE_TIMEOUT_S = 1.0

#: answers that say the holder is not there: nothing answered in time, or another server answered
GONE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND,
                  grpc.StatusCode.UNIMPLEMENTED})


async def answers(rec: NodeRecord, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True if the node of ``rec`` still answers at ``rec.grpc_address`` as ``rec.instance`` (as any node when
    the record has no instance), within ``timeout_s`` seconds; False if it is gone (see module doc). A record
    without a gRPC address (a web node) counts as answering: it cannot be asked. Never raises."""
    if not rec.grpc_address:
        return True
    service = instance_service(rec.instance) if rec.instance else ""
    try:
        async with grpc.aio.insecure_channel(rec.grpc_address) as ch:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service),
                                                       timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        gone = exc.code() in GONE
        logger.info("node %s at %s %s: %s", rec.node_id, rec.grpc_address,
                    "is gone" if gone else "answers", exc.code().name)
        return not gone
    except Exception as exc:  # a malformed address, a channel that cannot be made: ask nothing, keep the id
        logger.warning("could not ask node %s at %s whether it runs: %s", rec.node_id, rec.grpc_address, exc)
        return True
    return True
