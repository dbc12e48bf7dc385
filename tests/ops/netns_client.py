"""A user's browser and an operator's console, run *inside* a network namespace by the
multi-host test: one JSON command per stdin line, one JSON answer per stdout line.

Commands (``op``): ``register`` {base, name, password}, ``me`` {base}, ``upload`` {base,
file, timeout}: the image JSON once ready, ``fetch`` {url}: status + sha256, ``nodes``
{manager, secret}: the registry as ``pixelfox status`` sees it, ``wait_nodes`` {manager,
secret, healthy: [ids], timeout}, ``rogue_register`` {manager}: Register with a wrong
secret, returns the gRPC code. Errors come back as ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

COOKIE = "pixelfox_session"


class Browser:
    """One session cookie, sent to whatever base URL a command names (nginx in front of web)."""

    def __init__(self) -> None:
        self.cookie = ""

    def request(self, url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
                method: str | None = None) -> tuple[int, bytes, dict[str, str]]:
        h = dict(headers or {})
        if self.cookie:
            h["Cookie"] = f"{COOKIE}={self.cookie}"
        req = urllib.request.Request(url, data=data, headers=h, method=method)
        opener = urllib.request.build_opener(NoRedirect())
        try:
            with opener.open(req, timeout=60) as r:
                status, body, hdrs = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, body, hdrs = e.code, e.read(), e.headers
        for value in hdrs.get_all("Set-Cookie") or []:
            m = re.match(rf"{COOKIE}=([^;]*)", value)
            if m:
                self.cookie = m.group(1)
        return status, body, {k.lower(): v for k, v in hdrs.items()}

    def csrf(self, url: str) -> str:
        status, body, _ = self.request(url)
        text = body.decode()
        m = re.search(r'name="csrf_token" value="([^"]+)"', text) or re.search(
            r'<meta name="csrf-token" content="([^"]+)"', text)
        if status != 200 or not m:
            raise RuntimeError(f"no CSRF token at {url} ({status})")
        return m.group(1)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def form(fields: dict[str, str]) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def do(b: Browser, cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd["op"]
    if op == "register":
        token = b.csrf(cmd["base"] + "/register")
        status, body, _ = b.request(cmd["base"] + "/register", form({
            "csrf_token": token, "name": cmd["name"], "password": cmd["password"], "password2": cmd["password"]}),
            {"Content-Type": "application/x-www-form-urlencoded"})
        return {"status": status}
    if op == "me":
        status, body, _ = b.request(cmd["base"] + "/api/v1/me")
        return {"status": status, "body": json.loads(body) if status == 200 else body.decode()[:200]}
    if op == "upload":
        token = b.csrf(cmd["base"] + "/")
        data, ctype = multipart(Path(cmd["file"]))
        status, body, _ = b.request(cmd["base"] + "/api/v1/images", data,
                                    {"Content-Type": ctype, "X-CSRF-Token": token})
        if status != 201:
            return {"status": status, "error": body.decode()[:300]}
        image = json.loads(body)
        deadline = time.monotonic() + cmd.get("timeout", 90)
        while image["status"] == "processing" and time.monotonic() < deadline:
            time.sleep(0.5)
            st, body, _ = b.request(f"{cmd['base']}/api/v1/images/{image['id']}")
            if st == 200:
                image = json.loads(body)
        return {"status": status, "image": image}
    if op == "image":
        status, body, _ = b.request(f"{cmd['base']}/api/v1/images/{cmd['id']}")
        return {"status": status, "image": json.loads(body) if status == 200 else None}
    if op == "fetch":
        status, body, headers = b.request(cmd["url"])
        return {"status": status, "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body),
                "type": headers.get("content-type", "")}
    if op in ("nodes", "wait_nodes"):
        return asyncio.run(nodes(cmd))
    if op == "rogue_register":
        return asyncio.run(rogue(cmd))
    raise ValueError(f"unknown op {op}")


async def nodes(cmd: dict[str, Any]) -> dict[str, Any]:
    from pixelfox.grpcx.auth import node_metadata
    from pixelfox.grpcx.client import channel
    from pixelfox.v1 import manager_pb2, manager_pb2_grpc

    deadline = time.monotonic() + cmd.get("timeout", 0)
    async with channel(cmd["manager"]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        while True:
            try:
                reply = await stub.ListNodes(manager_pb2.ListNodesRequest(), metadata=node_metadata(cmd["secret"]),
                                             timeout=5)
                rows = {n.node_id: {"healthy": n.healthy, "status": n.status, "role": n.role,
                                    "address": n.grpc_address} for n in reply.nodes}
            except Exception as exc:
                rows = {"_error": {"healthy": False, "status": 0, "role": 0, "address": str(exc)[:200]}}
            want = cmd.get("healthy", [])
            if cmd["op"] == "nodes" or all(rows.get(n, {}).get("healthy") for n in want) \
                    or time.monotonic() > deadline:
                return {"nodes": rows}
            await asyncio.sleep(0.3)


async def rogue(cmd: dict[str, Any]) -> dict[str, Any]:
    """Try to join the cluster with a wrong secret: the manager must refuse."""
    import grpc

    from pixelfox.grpcx.auth import node_metadata
    from pixelfox.grpcx.client import channel
    from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc

    async with channel(cmd["manager"]) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        try:
            await stub.Register(manager_pb2.RegisterRequest(
                role=common_pb2.NODE_ROLE_UPLOAD, node_id="rogue1", grpc_address="10.0.0.1:1", capacity=1),
                metadata=node_metadata("not-the-secret"), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return {"code": exc.code().name}
    return {"code": "OK"}


def main() -> None:
    b = Browser()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            out = do(b, json.loads(line))
        except Exception as exc:
            out = {"error": f"{exc.__class__.__name__}: {exc}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
