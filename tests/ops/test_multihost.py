"""A cluster spread over several "hosts" (one network namespace each), with failures.

Hosts: redis, db (PostgreSQL), manager1, manager2, upload1, upload2, proc1, storage1,
storage2, web1, web2, lb (nginx: round robin over both web instances, no sticky sessions;
and the image origin, which sends a request for a dead storage node to the one holding the
other replica) and client. Nodes find the managers by address lists and prove membership with the
cluster secret across hosts; the client (a browser and an operator console,
``tests/ops/netns_client.py``) runs in its own namespace and reaches everything over the
bridge. The test logs in, uploads photos, then kills one web instance, one manager, one
upload node and one storage node in turn; after each kill the user is still logged in, a
new upload succeeds (on live nodes), and every image uploaded so far is still served intact
(the same SHA-256 for every variant and original as right after its upload).
"""

from __future__ import annotations

import io
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.ops.netlab import NetLab, netns_available
from tests.ops.pg import start_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
NODE_TIMEOUT_S = 3.0
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NGINX_CONF = """
daemon off;
{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 100m;
    upstream web {{
        server {web1}:8080 max_fails=1 fail_timeout=30s;
        server {web2}:8080 max_fails=1 fail_timeout=30s;
    }}
    # the image origin: each storage node's public URL is a path here; when the node is down
    # nginx asks the other one, which holds a replica (as deploy/nginx/nginx.conf does)
    upstream s1 {{
        server {storage1}:8000 max_fails=1 fail_timeout=30s;
        server {storage2}:8000 backup;
    }}
    upstream s2 {{
        server {storage2}:8000 max_fails=1 fail_timeout=30s;
        server {storage1}:8000 backup;
    }}
    server {{
        listen {lb}:8081;
        proxy_connect_timeout 2s;
        proxy_next_upstream error timeout http_404 http_502 http_503;
        location /s1/ {{ proxy_pass http://s1/; }}
        location /s2/ {{ proxy_pass http://s2/; }}
    }}
    server {{
        listen {lb}:80;
        location / {{
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout http_502;
        }}
    }}
}}
"""


class Client:
    """The JSON-lines client process inside the client namespace."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def __call__(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "client exited"
        out: dict[str, Any] = json.loads(line)
        assert "error" not in out or cmd["op"] == "upload", out
        return out


def photo(folder: Path, i: int) -> Path:
    rnd = random.Random(1000 + i)
    im = Image.new("RGB", (400, 300), (rnd.randrange(256), 40, 90))
    for _ in range(30):
        x, y = rnd.randrange(360), rnd.randrange(270)
        im.paste((rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)), (x, y, x + 40, y + 30))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    p = folder / f"multihost_{i}.jpg"
    p.write_bytes(buf.getvalue())
    return p


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetLab]:
    why = netns_available()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed (Debian: apt-get install nginx-light)")
    net = NetLab(tmp_path / "logs")
    try:
        net.start()
        yield net
    finally:
        net.close()


def node_env(lab: NetLab, name: str, secret: str, managers: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")}
    ip = lab.hosts[name].ip
    env.update({
        "PIXELFOX_NODE_ID": name, "PIXELFOX_CLUSTER__MANAGER": managers, "PIXELFOX_CLUSTER__SECRET": secret,
        "PIXELFOX_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5", "PIXELFOX_GRPC__HOST": ip, "PIXELFOX_GRPC__PORT": "7070",
        "PIXELFOX_METRICS_PORT": "9100", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
    })
    env.update(extra)
    return env


def start_nodes(lab: NetLab, tmp_path: Path, secret: str, managers: str, db_url: str) -> None:
    """Every node in its own namespace (nginx in ``lb``), all talking across the bridge."""
    ip = {n: h.ip for n, h in lab.hosts.items()}
    lb = f"http://{ip['lb']}"
    py = sys.executable
    common = {"PIXELFOX_REDIS__URL": f"redis://{ip['redis']}:6379/0"}
    for m in ("manager1", "manager2"):
        lab.run(m, [py, "-m", "nodes.manager"], node_env(
            lab, m, secret, managers, **common, PIXELFOX_DATABASE__URL=db_url,
            PIXELFOX_NODE_TIMEOUT_S=str(NODE_TIMEOUT_S), PIXELFOX_LEASE_S="6", PIXELFOX_SITE_URL=lb,
            PIXELFOX_REPLICAS="2"), cwd=tmp_path)
    for s in ("storage1", "storage2"):
        lab.run(s, [py, "-m", "nodes.storage"], node_env(
            lab, s, secret, managers, PIXELFOX_HTTP__HOST=ip[s], PIXELFOX_HTTP__PORT="8000",
            PIXELFOX_HTTP__PUBLIC_URL=f"http://{ip['lb']}:8081/s{s[-1]}", PIXELFOX_DATA_DIR=str(tmp_path / s)),
            cwd=tmp_path)
    for u in ("upload1", "upload2"):  # one staging folder for both: a shared mount across hosts
        lab.run(u, [py, "-m", "nodes.upload"], node_env(
            lab, u, secret, managers, **common, PIXELFOX_STAGING_DIR=str(tmp_path / "staging")), cwd=tmp_path)
    lab.run("proc1", [py, "-m", "nodes.proc"], node_env(lab, "proc1", secret, managers, PIXELFOX_WORKERS="2"),
            cwd=tmp_path)
    for w in ("web1", "web2"):
        lab.run(w, [py, "-m", "web"], node_env(
            lab, w, secret, managers, **common, PIXELFOX_HTTP__HOST=ip[w], PIXELFOX_HTTP__PORT="8080",
            PIXELFOX_HTTP__PUBLIC_URL=lb), cwd=tmp_path)
    ngx = tmp_path / "nginx"
    ngx.mkdir()
    user = "user root;" if os.geteuid() == 0 else ""  # workers must write the temp folders under tmp_path
    (ngx / "nginx.conf").write_text(NGINX_CONF.format(d=ngx, user=user, web1=ip["web1"], web2=ip["web2"],
                                                      storage1=ip["storage1"], storage2=ip["storage2"], lb=ip["lb"]))
    lab.run("lb", [NGINX, "-c", str(ngx / "nginx.conf"), "-p", str(ngx)])


def wait_unhealthy(c: Client, managers: str, secret: str, victim: str, alive: list[str]) -> None:
    """Until the registry shows ``victim`` unhealthy (and every node in ``alive`` healthy)."""
    rows = c(op="wait_nodes", manager=managers, secret=secret, healthy=alive, timeout=30)["nodes"]
    deadline = time.monotonic() + 3 * NODE_TIMEOUT_S
    while rows.get(victim, {}).get("healthy") and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = c(op="nodes", manager=managers, secret=secret)["nodes"]
    assert not rows.get(victim, {}).get("healthy", False), (victim, rows)
    assert all(rows.get(n, {}).get("healthy") for n in alive), (alive, rows)


def test_cluster_over_namespaces_survives_losing_one_of_each(lab: NetLab, tmp_path: Path) -> None:
    for h in ("redis", "db", "manager1", "manager2", "upload1", "upload2", "proc1", "storage1", "storage2",
              "web1", "web2", "lb", "client"):
        lab.add_host(h)
    ip = {n: h.ip for n, h in lab.hosts.items()}
    secret = secrets.token_urlsafe(24)
    managers = f"{ip['manager1']}:7070,{ip['manager2']}:7070"
    lb = f"http://{ip['lb']}"
    py = sys.executable
    lab.run("redis", ["redis-server", "--bind", ip["redis"], "--port", "6379", "--save", "", "--appendonly", "no",
                      "--protected-mode", "no"])
    pg = start_postgres(host=ip["db"], netns=lab.hosts["db"].ns, allow_cidr=lab.cidr)
    client_proc: subprocess.Popen[str] | None = None
    try:
        pg.psql("CREATE DATABASE pixelfox")
        start_nodes(lab, tmp_path, secret, managers, pg.url("pixelfox"))
        with (tmp_path / "client.err").open("w") as err:
            client_proc = subprocess.Popen(
                ["ip", "netns", "exec", lab.hosts["client"].ns, py, "-m", "tests.ops.netns_client"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        c = Client(client_proc)
        everyone = ["upload1", "upload2", "proc1", "storage1", "storage2", "web1", "web2", "manager1", "manager2"]
        rows = c(op="wait_nodes", manager=managers, secret=secret, healthy=everyone, timeout=90)["nodes"]
        if not all(rows.get(n, {}).get("healthy") for n in everyone):
            pytest.fail(f"not every node is healthy: {json.dumps(rows)}\n{_logs(lab)}")

        # across hosts, a process without the cluster secret cannot join
        assert c(op="rogue_register", manager=managers)["code"] == "UNAUTHENTICATED"
        assert "rogue1" not in c(op="nodes", manager=managers, secret=secret)["nodes"]
        assert c(op="register", base=lb, name="alice", password="correct horse battery")["status"] == 303
        assert c(op="me", base=lb)["status"] == 200
        uploaded: dict[str, dict[str, str]] = {}  # image id -> {variant key: sha256}

        def upload(i: int) -> str:
            res = c(op="upload", base=lb, file=str(photo(tmp_path, i)), timeout=120)
            assert res.get("status") == 201 and res["image"]["status"] == "ready", (res, _logs(lab))
            img = res["image"]
            shas = {}
            for v in [*img["variants"], {"name": "original", "format": img["format"], "url": img["original_url"]}]:
                got = c(op="fetch", url=v["url"])
                assert got["status"] == 200 and got["bytes"] > 0, (v, got)
                shas[f"{v['name']}.{v['format']}"] = got["sha256"]
            uploaded[img["id"]] = shas
            return str(img["id"])

        def all_served_intact() -> None:
            for image_id, shas in uploaded.items():
                img = c(op="image", base=lb, id=image_id)["image"]
                assert img is not None and img["status"] == "ready", image_id
                now = {f"{v['name']}.{v['format']}": v["url"] for v in img["variants"]}
                now[f"original.{img['format']}"] = img["original_url"]
                for key, sha in shas.items():
                    got = c(op="fetch", url=now[key])
                    assert got["status"] == 200 and got["sha256"] == sha, (image_id, key, now[key], got)

        upload(1)
        upload(2)
        all_served_intact()
        steps: list[tuple[str, float]] = []
        gone: set[str] = set()
        for victim in ("web1", "manager1", "upload1", "storage1"):
            started = time.monotonic()
            lab.kill(victim)
            if victim != "web1":  # nodes: wait until the registry has noticed (web1: nginx skips it at once)
                wait_unhealthy(c, managers, secret, victim, [n for n in everyone if n not in {*gone, victim}])
            me = c(op="me", base=lb)
            assert me["status"] == 200 and me["body"]["name"] == "alice", (victim, me)  # still logged in
            upload(10 + len(steps))  # new uploads go to the live nodes
            all_served_intact()
            steps.append((victim, round(time.monotonic() - started, 1)))
            gone.add(victim)
        print(json.dumps({"metric": "multihost_kill_steps_s", "steps": steps, "images": len(uploaded)}))
    finally:
        if client_proc is not None:
            for f in (client_proc.stdin, client_proc.stdout):
                if f is not None:
                    f.close()
            client_proc.kill()
            client_proc.wait(10)
        pg.stop()


def _logs(lab: NetLab) -> str:
    out = []
    for p in sorted(lab.logs.glob("*.log")):
        out.append(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
    return "\n".join(out)
