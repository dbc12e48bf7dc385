"""Two web instances behind a real nginx (round robin, no sticky sessions) on an own cluster.

* a logged-in user stays logged in on every request, through a restart of one instance;
* deleting an image while a storage node is down: the replicas it holds are deleted by the
  manager's background retry once it is back, and the CDN purge hook hears the URLs;
* image pages render from the Redis read model while the manager process is stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import pytest

from pixelfox.cli.launcher import Counts, LocalCluster, free_port
from tests.conftest import CORPUS, wait_http
from tests.e2e.test_web import Browser, _until_ready, _user
from tests.e2e.test_web_community import api, csrf_header

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PAGE_CACHE_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "page-cache.conf"
OTHER_PHOTO = CORPUS / "photos" / "painting_rgb.png"
PHOTO = CORPUS / "photos" / "samsung_j3_orient6.jpg"


class Hook(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        Hook.bodies.append(json.loads(self.rfile.read(n)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Site:
    local: LocalCluster
    root: Path
    nginx_url: str
    nginx_dir: Path
    webs: list[str]

    def access_upstreams(self) -> list[str]:
        lines = (self.nginx_dir / "access.log").read_text().splitlines()
        return [ln.split()[-1] for ln in lines if ln.strip()]

    def storage_files(self, name: str) -> set[str]:
        d = self.root / ".pixelfox" / "data" / name
        return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}


NGINX_CONF = """
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
  log_format up '$request $status $upstream_addr';
  access_log {d}/access.log up;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  client_max_body_size 110m;
  proxy_cache_path {d}/pages levels=1:2 keys_zone=pixelfox_pages:10m max_size=64m inactive=1m;
  upstream web {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://web;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_request_buffering off;
      include {page_cache};
    }}
  }}
}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed (Debian: apt-get install nginx-light)")
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    root = tmp_path_factory.mktemp("scaleout")
    # the manager drains for 2 s: a test stops it, and with the processing node's Work stream open it
    # waited out the whole default grace (10 s)
    local = LocalCluster(root, Counts(upload=1, proc=1, storage=2, web=2), extra_env={
        "PIXELFOX_PURGE_HOOK_URL": f"http://127.0.0.1:{hook.server_address[1]}/purge",
        "PIXELFOX_GC_INTERVAL_S": "1",
    }, role_env={"manager": {"PIXELFOX_GRPC__GRACE_S": "2"}})
    ngx_dir = root / "nginx"
    ngx_dir.mkdir()
    port = free_port()
    nginx: subprocess.Popen[bytes] | None = None
    try:
        local.start()
        asyncio.run(local.wait_ready(90))
        webs = list(local.web_urls)
        for url in webs:
            wait_http(f"{url}/healthz")
        servers = "\n".join(f"    server {u.removeprefix('http://')} max_fails=0;" for u in webs)
        user = "user root;" if os.geteuid() == 0 else ""
        (ngx_dir / "nginx.conf").write_text(NGINX_CONF.format(d=ngx_dir, user=user, servers=servers, port=port,
                                                              page_cache=PAGE_CACHE_CONF))
        nginx = subprocess.Popen([NGINX, "-p", str(ngx_dir), "-c", str(ngx_dir / "nginx.conf"), "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=(ngx_dir / "stderr.log").open("wb"))
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield Site(local, root, f"http://127.0.0.1:{port}", ngx_dir, webs)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        local.stop()
        hook.shutdown()


async def upload(b: Browser, path: Path) -> dict[str, Any]:
    _, html, _ = await b.get("/")
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert token, html
    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=path.name)
    status, body, _ = await b.post("/api/v1/images", form, {"X-CSRF-Token": token.group(1)})
    assert status == 201, body
    return await _until_ready(b, json.loads(body))


async def test_round_robin_sessions_and_restart(site: Site, http: aiohttp.ClientSession) -> None:
    b = Browser(http, site.nginx_url)
    await b.register(_user())
    statuses = [await b.me() for _ in range(12)]
    assert statuses == [200] * 12
    ups = site.access_upstreams()
    assert {u for u in ups if u != "-"} >= {w.removeprefix("http://") for w in site.webs}, ups

    name = site.local.web_names[site.webs[0]]
    site.local.terminate(name)
    assert [await b.me() for _ in range(6)] == [200] * 6  # nginx moves on to the live instance
    site.local.restart(name)
    wait_http(f"{site.webs[0]}/healthz")
    assert [await b.me() for _ in range(12)] == [200] * 12
    recent = site.access_upstreams()[-12:]
    assert site.webs[0].removeprefix("http://") in recent, recent  # the restarted one serves again


async def test_delete_with_a_storage_node_down(site: Site, http: aiohttp.ClientSession) -> None:
    b = Browser(http, site.nginx_url)
    await b.register(_user())
    image = await upload(b, OTHER_PHOTO)
    keys = [v["url"].split("/o/", 1)[1] for v in image["variants"]]
    assert all(k in site.storage_files("storage2") for k in keys)
    site.local.terminate("storage2")
    await asyncio.sleep(6)  # the manager marks it unhealthy (node_timeout_s = 5)

    _, html, _ = await b.get(f"/i/{image['id']}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token, html
    Hook.bodies.clear()
    status, body, _ = await b.post(f"/i/{image['id']}/delete", {"csrf_token": token.group(1)})
    assert status == 303, body
    assert not any(k in site.storage_files("storage1") for k in keys)
    assert all(k in site.storage_files("storage2") for k in keys)  # it was down
    purged = [u for body in Hook.bodies for u in body["urls"]]
    assert any(image["id"] in u for u in purged) and any(keys[0] in u for u in purged), Hook.bodies

    site.local.restart("storage2")
    for _ in range(120):  # the manager's retry runs every second once the node is healthy again
        if not any(k in site.storage_files("storage2") for k in keys):
            break
        await asyncio.sleep(0.5)
    assert not any(k in site.storage_files("storage2") for k in keys)
    assert (await b.get(f"/i/{image['id']}"))[0] == 404


async def test_pages_render_while_the_manager_is_stopped(site: Site, http: aiohttp.ClientSession) -> None:
    b = Browser(http, site.nginx_url)
    await b.register(_user())
    image = await upload(b, PHOTO)
    anon = Browser(http, site.nginx_url)
    status, page, _ = await anon.get(f"/i/{image['id']}")  # first read fills the read model
    assert status == 200
    site.local.terminate("manager1")
    try:
        for i in range(4):  # both instances (a query string of its own: past nginx's page cache)
            status, page, _ = await anon.get(f"/i/{image['id']}?r={i}")
            assert status == 200, page
            assert image["variants"][0]["url"] in page
            status, body, _ = await anon.get(f"/api/v1/images/{image['id']}")
            assert status == 200 and json.loads(body)["id"] == image["id"]
        assert await b.me() == 200  # sessions do not need the manager either
    finally:
        site.local.restart("manager1")
        await site.local.wait_ready(90)  # the next test needs a manager again


async def test_anonymous_pages_of_public_images_are_micro_cached(site: Site, http: aiohttp.ClientSession) -> None:
    """nginx keeps an anonymous visitor's page of a public, ready image for PIXELFOX_PAGE_CACHE_S (5 s):
    the web nodes send X-Accel-Expires for exactly those answers (deploy/nginx/page-cache.conf).
    Signed-in visitors bypass it, errors are never kept, and a page that went private stops being
    served once the few seconds are over."""
    owner = Browser(http, site.nginx_url)
    await owner.register(_user())
    image = await upload(owner, OTHER_PHOTO)
    path = f"/i/{image['id']}"
    anon = Browser(http, site.nginx_url)
    seen = []
    for _ in range(3):
        status, _, headers = await anon.get(path)
        seen.append((status, headers.get("X-Cache-Status")))
        assert "X-Accel-Expires" not in headers and headers["Cache-Control"] == "no-store"  # browsers keep nothing
    assert seen == [(200, "MISS"), (200, "HIT"), (200, "HIT")], seen
    status, owners_page, headers = await owner.get(path)
    assert (status, headers.get("X-Cache-Status")) == (200, "BYPASS")
    assert 'name="csrf_token"' in owners_page  # the owner's own page (its forms), not the cached one
    missing = [(await anon.get("/i/NoSuchImage0"))[2].get("X-Cache-Status") for _ in range(2)]
    assert missing == ["MISS", "MISS"]  # a 404 is never kept
    # oEmbed says "public, max-age=300" to browsers; nginx keeps only what X-Accel-Expires allows. Each web
    # node answers for its own public URL (the other one says 404), and nginx alternates between them.
    oembed = f"/oembed?url={quote(site.webs[0] + path)}&format=json"
    answers = [(status, headers.get("X-Cache-Status"), headers.get("Cache-Control"))
               for status, _, headers in [await anon.get(oembed) for _ in range(4)]]
    assert (200, "MISS", "public, max-age=300") in answers and all(a[1] == "MISS" for a in answers), answers

    status, body = await api(owner, "PATCH", f"/api/v1/images/{image['id']}", {"visibility": "private"},
                             await csrf_header(owner))
    assert status == 200, body
    await asyncio.sleep(6)  # page_cache_s (5) has passed
    after = [(await anon.get(path))[0] for _ in range(3)]
    assert after == [404, 404, 404], after  # and stays gone (a stale copy is never served again)
    assert [(await anon.get(oembed))[0] for _ in range(2)] == [404, 404]  # its oEmbed answers too
