"""Image serving throughput: a storage node alone, behind nginx (X-Accel-Redirect, or caching), and nginx alone.

Usage: ``.venv/bin/python bench/serving.py [--files 200] [--size 51200] [--seconds 8] [--connections 32]``

One run, same files, same machine, three routes measured one after the other:

1. ``node``   — ``GET /o/<key>`` straight from a storage node (uvicorn + httptools; bytes read from the pool
   by ``FsStore.open_range``; ETag/Range logic in Python);
2. ``accel``  — nginx proxies to a second storage node process on the same pool in
   X-Accel-Redirect mode (``PIXELFOX_ACCEL_REDIRECT=/_pool/``): the node answers headers only
   and nginx sends the file;
3. ``cached`` — nginx with ``proxy_cache`` in front of the plain node (``deploy/nginx/nginx.conf``'s
   image origin): public objects are immutable, so nginx keeps them after the first request and
   answers from its own cache; private answers (``Cache-Control: private, no-store``) are never
   stored. Informational: the issue's 0.9x goal is for ``accel``;
4. ``nginx``  — nginx serves the same files directly (``alias`` on the pool), the reference;
5. ``stub``   — the ``accel`` front in front of the cheapest upstream there is: a second nginx process
   that answers every ``GET /o/<key>`` with the X-Accel-Redirect and ETag headers and no body
   (``return 200``), so no Python runs at all. It is the ceiling of any X-Accel-Redirect design on
   this machine: what nginx's own proxy round trip and internal redirect leave of ``nginx``.

Load comes from ``wrk`` (Debian package ``wrk``) with a Lua script cycling over every file;
without ``wrk`` an aiohttp client is used (slower: on a 2-core machine it competes with the
server for CPU, so its figures are lower bounds). Prints requests/s per route and the ratios
against the issue 6 goals: node >= 0.4x nginx, accel >= 0.9x nginx. Every route is checked to
return the right bytes before it is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pixelfox.storage.fs import FsStore  # noqa: E402
from pixelfox.storage.keys import original_key  # noqa: E402

GOALS = {"node": 0.4, "accel": 0.9}

# what every nginx process of the bench shares: ``{name}`` names its pid, log and temp folders
NGINX_MAIN = """
daemon off;
{user}
worker_processes {workers};
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fastcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
"""

NGINX_CONF = NGINX_MAIN + """
    sendfile on;
    tcp_nopush on;
    types {{ image/jpeg jpg; }}
    upstream storage {{ server 127.0.0.1:{accel_port}; keepalive 64; }}
    upstream plain {{ server 127.0.0.1:{plain_port}; keepalive 64; }}
    upstream stub {{ server 127.0.0.1:{stub_port}; keepalive 64; }}
    proxy_cache_path {tmp}/cache levels=1:2 keys_zone=objects:10m max_size=1g inactive=7d use_temp_path=off;
    server {{  # nginx alone: the reference
        listen 127.0.0.1:{direct_port};
        location /o/ {{
            alias {pool}/;
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
    }}
    server {{  # nginx caching in front of a plain storage node
        listen 127.0.0.1:{cache_port};
        location /o/ {{
            proxy_pass http://plain;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache objects;
            proxy_cache_lock on;
            proxy_cache_revalidate on;
        }}
    }}
{accel_fronts}}}
"""

ACCEL_FRONT = """
    server {{  # nginx in front of {what} in X-Accel-Redirect mode
        listen 127.0.0.1:{port};
        location /o/ {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /_pool/ {{
            internal;
            alias {pool}/;
            etag off;
            add_header ETag $upstream_http_etag always;
            add_header X-Content-Type-Options nosniff always;
            add_header Content-Security-Policy sandbox always;
        }}
    }}
"""

# the `stub` route's upstream: its own nginx process, headers only, no Python (the X-Accel ceiling)
STUB_CONF = NGINX_MAIN + """
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/o/(.+)$ {{
            add_header X-Accel-Redirect /_pool/$1;
            add_header ETag '"stub"';
            return 200;
        }}
    }}
}}
"""

WRK_LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def make_files(pool: Path, count: int, size: int) -> list[str]:
    store = FsStore(pool)
    keys = []
    for _ in range(count):
        data = secrets.token_bytes(size)
        sha = hashlib.sha256(data).hexdigest()
        key = original_key(sha, "jpg")

        async def one(d: bytes = data):  # type: ignore[no-untyped-def]
            yield d

        await store.put(key, one(), content_type="image/jpeg", sha256=sha, size=size)
        keys.append(key)
    return keys


def start_node(tmp: Path, pool: Path, accel: bool, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")} | {
        "PIXELFOX_NODE_ID": f"bench-{'accel' if accel else 'plain'}",
        "PIXELFOX_CLUSTER__MANAGER": "127.0.0.1:1",  # nothing listens: the node serves without a manager
        "PIXELFOX_CLUSTER__SECRET": "bench-serving-secret", "PIXELFOX_GRPC__PORT": str(free_port()),
        "PIXELFOX_HTTP__PORT": str(http_port), "PIXELFOX_METRICS_PORT": "-1",
        "PIXELFOX_DATA_DIR": str(pool), "PIXELFOX_LOG__LEVEL": "WARNING", "PIXELFOX_SIGN_ORIGINALS": "0",
        "PIXELFOX_ACCEL_REDIRECT": "/_pool/" if accel else "", "PIXELFOX_HTTP_WORKERS": str(workers),
    }
    log = (tmp / f"node-{http_port}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "nodes.storage"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    wait_url(f"http://127.0.0.1:{http_port}/healthz")
    return proc, http_port


def wait_url(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def check(base: str, key: str, pool: Path) -> None:
    with urllib.request.urlopen(f"{base}/o/{key}", timeout=5) as r:
        body = r.read()
    if body != (pool / key).read_bytes():
        raise SystemExit(f"{base} returned the wrong bytes for {key}")


def run_wrk(base: str, keys: list[str], seconds: float, connections: int, tmp: Path) -> float:
    script = tmp / "paths.lua"
    script.write_text(WRK_LUA % ",".join(f'"/o/{k}"' for k in keys))
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "-s", str(script), base],
                         capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses", out):
        raise SystemExit(f"wrk saw errors against {base}:\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise SystemExit(f"cannot parse wrk output:\n{out}")
    return float(m.group(1))


async def run_aiohttp(base: str, keys: list[str], seconds: float, connections: int) -> float:
    import aiohttp

    done = 0
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def worker(i: int) -> None:
            nonlocal done
            while time.monotonic() < stop:
                async with session.get(f"{base}/o/{keys[(done + i) % len(keys)]}") as r:
                    await r.read()
                    if r.status != 200:
                        raise SystemExit(f"{base}: HTTP {r.status}")
                done += 1

        start = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(connections)))
        return done / (time.monotonic() - start)


def measure(base: str, keys: list[str], args: argparse.Namespace, tmp: Path) -> float:
    if shutil.which("wrk"):
        return run_wrk(base, keys, args.seconds, args.connections, tmp)
    return asyncio.run(run_aiohttp(base, keys, args.seconds, args.connections))


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=50 * 1024, help="bytes per file (default 50 KiB)")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per route")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1,
                    help="processes per server: nginx worker_processes, node PIXELFOX_HTTP_WORKERS (default 1)")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per route, alternating; median kept")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx not found (Debian nginx-light)")
    tmp = Path(tempfile.mkdtemp(prefix="pixelfox-bench-serving-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pool = tmp / "pool"
        keys = asyncio.run(make_files(pool, args.files, args.size))
        plain, plain_port = start_node(tmp, pool, accel=False, workers=args.workers)
        accel, accel_port = start_node(tmp, pool, accel=True, workers=args.workers)
        procs += [plain, accel]
        direct_port, front_port, cache_port = free_port(), free_port(), free_port()
        stub_port, stub_front_port = free_port(), free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        fronts = "".join(ACCEL_FRONT.format(what=what, port=port, upstream=upstream, pool=pool.resolve())
                         for what, port, upstream in (("a storage node", front_port, "storage"),
                                                      ("the stub upstream", stub_front_port, "stub")))
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            name="nginx", user=user, workers=args.workers, tmp=tmp, pool=pool.resolve(), accel_port=accel_port,
            plain_port=plain_port, stub_port=stub_port, direct_port=direct_port, cache_port=cache_port,
            accel_fronts=fronts))
        stub_conf = tmp / "stub.conf"
        stub_conf.write_text(STUB_CONF.format(name="stub", user=user, workers=args.workers, tmp=tmp, port=stub_port))
        for c, log in ((conf, "nginx-error.log"), (stub_conf, "stub-error.log")):
            procs.append(subprocess.Popen([nginx, "-c", str(c), "-e", str(tmp / log)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        routes = {"nginx": f"http://127.0.0.1:{direct_port}", "node": f"http://127.0.0.1:{plain_port}",
                  "accel": f"http://127.0.0.1:{front_port}", "cached": f"http://127.0.0.1:{cache_port}",
                  "stub": f"http://127.0.0.1:{stub_front_port}"}
        for base in routes.values():
            wait_url(base + "/o/x")
            check(base, keys[0], pool)
        # rounds alternate the routes so a burst of other load on the machine hits all of them alike
        runs: dict[str, list[float]] = {name: [] for name in routes}
        for _ in range(args.rounds):
            for name, base in routes.items():
                runs[name].append(measure(base, keys, args, tmp))
        rps = {name: statistics.median(v) for name, v in runs.items()}
        result = {
            "files": args.files, "size": args.size, "seconds": args.seconds, "connections": args.connections,
            "client": "wrk" if shutil.which("wrk") else "aiohttp", "workers": args.workers,
            "node_loop": loop_name(),
            "cpus": os.cpu_count(), "rounds": args.rounds, "rps": {k: round(v, 1) for k, v in rps.items()},
            "runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
            "ratio": {k: round(rps[k] / rps["nginx"], 3) for k in rps if k != "nginx"},
            "accel_of_stub": round(rps["accel"] / rps["stub"], 3),
            "goal": GOALS,
        }
        if args.json:
            print(json.dumps(result))
            return
        print(f"{args.files} files x {args.size} bytes, {args.rounds} x {args.seconds:g} s per route (median), "
              f"{args.connections} connections, client {result['client']}, {args.workers} process(es) per server, "
              f"{os.cpu_count()} CPUs, node event loop {loop_name()}")
        for name in ("nginx", "node", "accel", "cached", "stub"):
            line = f"  {name:6} {rps[name]:10.1f} req/s  (runs {', '.join(f'{x:.0f}' for x in runs[name])})"
            ratio = rps[name] / rps["nginx"]
            if name in GOALS:
                line += f"   {ratio:.2f}x nginx (goal {GOALS[name]}x: {'met' if ratio >= GOALS[name] else 'NOT met'})"
            elif name != "nginx":
                line += f"   {ratio:.2f}x nginx"
            print(line)
        print(f"  accel reaches {result['accel_of_stub']:.2f}x of the stub: the X-Accel ceiling here is "
              f"{rps['stub'] / rps['nginx']:.2f}x nginx")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
