"""``python -m pixelfox.grpcx.probe HOST:PORT [SERVICE]``: a gRPC health probe for containers.

Calls ``grpc.health.v1.Health/Check`` for ``SERVICE`` (default ``""``: the whole server)
with a deadline (``--timeout``, default 2 s) and exits 0 when the answer is SERVING, 1 for
any other status (also a service the server does not know: the health protocol answers that with
``NOT_FOUND``), 2 when the server cannot be reached. It replaces ``grpc_health_probe`` in
docker compose healthchecks and Kubernetes exec probes (ECOSYSTEM.md §2).
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout_s: float = 2.0) -> str:
    """The status name (SERVING, NOT_SERVING, SERVICE_UNKNOWN...); raises ``grpc.RpcError`` when unreachable."""
    with grpc.insecure_channel(address) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pixelfox.grpcx.probe", description=__doc__.splitlines()[0])
    p.add_argument("address", help="HOST:PORT of the gRPC server")
    p.add_argument("service", nargs="?", default="", help="full service name, e.g. pixelfox.v1.ManagerService")
    p.add_argument("--timeout", type=float, default=2.0, help="deadline in seconds (default 2)")
    opts = p.parse_args(argv)
    try:
        status = check(opts.address, opts.service, opts.timeout)
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.NOT_FOUND:  # reached: it serves no such service (a typo in SERVICE)
            print(f"{opts.address} {opts.service}: SERVICE_UNKNOWN (the server has no such service)")
            return 1
        print(f"{opts.address}: {code.name}", file=sys.stderr)
        return 2
    print(f"{opts.address} {opts.service or '(server)'}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
