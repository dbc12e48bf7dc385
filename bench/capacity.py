"""Capacity of a local cluster, in the terms of the plan's capacity table (issue 7).

Two separate measurements, never at the same time:

1. **Serving** - the web tier behind nginx round-robin (``--web`` instances) under the locust
   mix of ``bench/locustfile.py`` (readers and signed-in browsers; with ``--with-uploads`` also
   the API uploaders, whose processing then shares the cores), stepping the user count up
   (``--users 50,200,1000``); per step: requests/s, p50/p95/p99 per request type, failures,
   and uploads processed per hour during the step.
2. **Processing** - ``--photos`` generated 12-megapixel JPEGs (4000 x 3000) uploaded at once
   with ``pixelfox put``; uploads/h = photos / (time until the last is ready).

Everything runs on 127.0.0.1 in a temporary folder; locust is always headless and bounded
(``-u``, ``-r``, ``--run-time``). The table goes into ``docs/benchmarks.md`` between
``<!-- capacity:begin -->`` and ``<!-- capacity:end -->``, beside the plan's figures.

    .venv/bin/python bench/capacity.py --users 20,100 --step-s 30 --photos 8   # brief
    .venv/bin/python bench/capacity.py --users 100,300,1000 --step-s 120 --photos 60
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scale import metric, scrape  # noqa: E402
from pixelfox.cli.launcher import Counts, LocalCluster, free_port  # noqa: E402
from tests.jobtools import cli, make_photo, newest_images, put_json  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- capacity:begin -->", "<!-- capacity:end -->"
PLAN = ("Plan (seed capacity table): single container ~500-1,000 uploads/h and ~100-200 active users; "
        "Phase 3 on 5+ VPS 10,000-50,000 uploads/h and 5,000-25,000 users. Goals on this 2-core machine: "
        ">= 20,000 processed 12-MP uploads/h; 1,000 active users with page-view p95 < 200 ms and 0 failed requests.")
NGINX_CONF = """worker_processes 1;
{user}
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  client_max_body_size 110m;
  proxy_cache_path {d}/pages levels=1:2 keys_zone=pixelfox_pages:10m max_size=64m inactive=1m;
  upstream web {{
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://web;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_request_buffering off;
      # each locust user plays one client address (loopback has only one): the web nodes trust
      # this proxy (PIXELFOX_TRUSTED_PROXIES), so per-address limits count per simulated client
      proxy_set_header X-Forwarded-For $http_x_bench_client;
      include {page_cache};
    }}
  }}
}}
"""


def start_nginx(folder: Path, web_urls: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """nginx round-robin over ``web_urls`` on a free loopback port; returns it and its base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(f"    server {u.removeprefix('http://')};" for u in web_urls)
    user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the 0700 temp folder
    page_cache = REPO / "deploy" / "nginx" / "page-cache.conf"  # anonymous pages of public images, 5 s
    (folder / "nginx.conf").write_text(NGINX_CONF.format(d=folder, servers=servers, port=port, user=user,
                                                         page_cache=page_cache))
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([exe, "-c", str(folder / "nginx.conf"), "-g", "daemon off;"])
    time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}"


def seed(local: LocalCluster, key: str, folder: Path, users: int) -> tuple[list[str], list[str]]:
    """Ready images to read and accounts to log in with."""
    photos = [make_photo(folder / f"seed{i}.jpg", 1600, 1200, seed=100 + i) for i in range(6)]
    slugs = [r["id"] for r in put_json(local.root, *photos) if r.get("id")]
    deadline = time.time() + 300
    while time.time() < deadline and any(i["status"] == "processing" for i in newest_images(local, key, 50)):
        time.sleep(1)
    accounts = []
    for i in range(users):
        name, pw = f"bench{i}", f"bench-password-{i}"
        subprocess.run([sys.executable, "-m", "pixelfox", "users", "create", name, "--password-stdin"],
                       cwd=local.root, input=pw + "\n", text=True, capture_output=True, check=False)
        accounts.append(f"{name}:{pw}")
    return slugs, accounts


def ready_count(local: LocalCluster, key: str) -> int:
    return sum(1 for i in newest_images(local, key, 1000) if i["status"] == "ready")


def run_step(host: str, users: int, step_s: int, env: dict[str, str], out: Path,
             classes: list[str], ramp_s: float) -> list[dict[str, str]]:
    """One locust step of ``users`` (``classes`` of bench/locustfile.py, by weight); its stats rows."""
    prefix = out / f"u{users}"
    subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "bench" / "locustfile.py"), "--headless",
                    "-u", str(users), "-r", f"{max(1.0, users / ramp_s):.1f}", "--run-time", f"{step_s}s",
                    "--host", host,
                    "--csv", str(prefix), "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING",
                    *classes],
                   env={**os.environ, **env}, check=False, timeout=step_s + 120)
    with open(f"{prefix}_failures.csv", newline="") as f:
        for row in csv.DictReader(f):
            print(f"  failures: {row['Occurrences']} x {row['Method']} {row['Name']}: {row['Error'][:200]}", flush=True)
    with open(f"{prefix}_stats.csv", newline="") as f:
        return list(csv.DictReader(f))


def job_steps(local: LocalCluster) -> str:
    """Mean seconds per job step (fetch, process, store) over every processing node's jobs so far,
    from their ``pixelfox_proc_step_duration_seconds`` histograms; e.g. ``"fetch 0.05 s, ..."``."""
    samples = [scrape(local.metrics_url(c.name)) for c in local.children if c.name.startswith("proc")]
    parts = []
    for step in ("fetch", "process", "store"):
        total = sum(metric(s, "pixelfox_proc_step_duration_seconds_sum", step=step) for s in samples)
        count = sum(metric(s, "pixelfox_proc_step_duration_seconds_count", step=step) for s in samples)
        parts.append(f"{step} {total / count:.2f} s" if count else f"{step} -")
    return ", ".join(parts)


CORPUS_PHOTOS = REPO.parent / "shared" / "corpus" / "photos"


def real_photos(folder: Path, n: int) -> list[Path]:
    """``n`` distinct 12-MP (4000 x 3000) JPEGs made from the corpus's camera photos of 8 MP or more:
    scaled to cover 4000 x 3000 (1 % more on each pass over the sources, so no two copies are the same
    bytes: dedup would skip them), centre-cropped, saved at quality 90."""
    from PIL import Image, ImageOps

    def megapixels(path: Path) -> float:
        with Image.open(path) as im:
            return im.width * im.height / 1e6

    sources = [p for p in sorted(CORPUS_PHOTOS.glob("*.jpg")) if megapixels(p) >= 8]
    if not sources:
        raise SystemExit(f"no camera photos of 8 MP or more in {CORPUS_PHOTOS}")
    out = []
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            if im.height > im.width:
                im = im.rotate(90, expand=True)
            scale = max(4000 / im.width, 3000 / im.height) * (1 + 0.01 * (i // len(sources)))
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
            left, top = (im.width - 4000) // 2, (im.height - 3000) // 2
            path = folder / f"p12mp_{i}.jpg"
            im.crop((left, top, left + 4000, top + 3000)).save(path, "JPEG", quality=90)
        out.append(path)
    return out


def processing(local: LocalCluster, key: str, folder: Path, n: int, synthetic: bool) -> tuple[float, float]:
    """Upload ``n`` 12-MP photos at once (from the corpus's camera photos, or generated gradient +
    heavy noise with ``synthetic``: about 3x the encoding work); returns (uploads per hour, seconds)."""
    photos = ([make_photo(folder / f"p12mp_{i}.jpg", 4000, 3000, seed=500 + i) for i in range(n)] if synthetic
              else real_photos(folder, n))
    start = time.time()
    results = put_json(local.root, *photos, timeout=1800)
    slugs = {r["id"] for r in results if r.get("id")}
    while time.time() - start < 3600:
        imgs = {i["id"]: i["status"] for i in newest_images(local, key, 1000) if i["id"] in slugs}
        if imgs and all(s != "processing" for s in imgs.values()):
            break
        time.sleep(0.5)
    took = time.time() - start
    return len(slugs) / took * 3600, took


def table(rows: list[tuple[int, list[dict[str, str]], float]], proc: tuple[float, float, int, str] | None,
          note: str) -> str:
    lines = [BEGIN, "", f"_{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {note}_", "", PLAN, ""]
    if proc is not None:
        per_h, took, n, steps = proc
        lines += [f"**Processing** (separate run): {n} 12-MP JPEGs uploaded at once, all ready in "
                  f"{took:.0f} s → **{per_h:,.0f} uploads/h** (goal 20,000); mean per job: {steps}.", ""]
    lines += ["| users | request | req/s | p50 ms | p95 ms | p99 ms | failures | processed uploads/h |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for users, stats, per_h in rows:
        for s in stats:
            lines.append(f"| {users} | {s['Name']} | {float(s['Requests/s']):.1f} | {s['50%']} | {s['95%']} | "
                         f"{s['99%']} | {s['Failure Count']} | {per_h:,.0f} |")
    return "\n".join([*lines, "", END])


def write_doc(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n## Capacity (bench/capacity.py)\n\n" + text + "\n"
    DOC.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", default="20,100", help="comma list of user counts (steps)")
    ap.add_argument("--step-s", type=int, default=30, help="seconds per step")
    ap.add_argument("--web", type=int, default=2, help="web instances behind nginx")
    ap.add_argument("--proc", type=int, default=2, help="processing nodes")
    ap.add_argument("--managers", type=int, default=2,
                    help="managers sharing the database and Redis (2, as deploy/compose.yaml runs)")
    ap.add_argument("--photos", type=int, default=8, help="12-MP photos for the processing run (0 = skip)")
    ap.add_argument("--synthetic", action="store_true",
                    help="generated 12-MP photos (gradients + heavy noise, about 3x the encoding work of a "
                         "camera photo) instead of 12-MP copies of the corpus's camera photos")
    ap.add_argument("--accounts", type=int, default=40,
                    help="accounts the browsers log in with (shared round robin; the login throttle counts "
                         "attempts in flight, so keep browsers per account under its 20)")
    ap.add_argument("--ramp-s", type=float, default=30.0,
                    help="seconds to start each step's users (locust spawn rate = users / ramp-s)")
    ap.add_argument("--with-uploads", action="store_true",
                    help="serving steps include the API uploaders (their processing then competes with "
                         "serving for the same cores; by default serving and processing are measured apart)")
    ap.add_argument("--no-doc", action="store_true", help="print the table only")
    ap.add_argument("--keep", action="store_true", help="keep the cluster folder (logs) afterwards")
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pixelfox-capacity-"))
    local = LocalCluster(tmp, Counts(upload=2, proc=opts.proc, storage=2, web=opts.web, managers=opts.managers),
                         extra_env={"PIXELFOX_TRUSTED_PROXIES": "127.0.0.1"})  # nginx: see NGINX_CONF
    nginx = None
    try:
        local.start()
        asyncio.run(local.wait_ready(180))
        key = asyncio.run(local.ensure_admin())
        local.write_state(key)
        proc_fig = None
        if opts.photos:
            per_h, took = processing(local, key, tmp, opts.photos, opts.synthetic)
            proc_fig = (per_h, took, opts.photos, job_steps(local))
            print(f"processing: {opts.photos} x 12 MP in {took:.0f} s = {per_h:,.0f} uploads/h; "
                  f"per job {proc_fig[3]}", flush=True)
        slugs, accounts = seed(local, key, tmp, opts.accounts)
        nginx, host = start_nginx(tmp / "nginx", local.web_urls)
        upload_dir = tmp / "upload-photos"
        upload_dir.mkdir()
        for i in range(4):
            make_photo(upload_dir / f"u{i}.jpg", 2000, 1500, seed=900 + i)
        env = {"PIXELFOX_BENCH_SLUGS": ",".join(slugs), "PIXELFOX_BENCH_API_KEY": key,
               "PIXELFOX_BENCH_USERS": ",".join(accounts), "PIXELFOX_BENCH_PHOTOS": str(upload_dir)}
        classes = ["Reader", "Browser", *(["Uploader"] if opts.with_uploads else [])]
        rows = []
        for users in [int(u) for u in opts.users.split(",")]:
            before, t0 = ready_count(local, key), time.time()
            stats = run_step(host, users, opts.step_s, env, tmp, classes, opts.ramp_s)
            per_h = (ready_count(local, key) - before) / (time.time() - t0) * 3600
            rows.append((users, stats, per_h))
            for s in stats:
                print(f"{users:>5} {s['Name']:<28} {float(s['Requests/s']):8.1f} req/s  p50 {s['50%']:>6}  "
                      f"p95 {s['95%']:>6}  p99 {s['99%']:>6}  fail {s['Failure Count']}", flush=True)
        load = os.getloadavg()[0]
        note = (f"{os.cpu_count()} CPUs, load average {load:.1f} at the end (shared machine), "
                f"{opts.managers} manager(s), {opts.web} web behind nginx, {opts.proc} proc, 2 upload, 2 storage, "
                f"{opts.step_s} s per step ({opts.ramp_s:.0f} s ramp), {opts.accounts} accounts, "
                f"locust users: {' + '.join(classes)}, 12-MP photos: "
                f"{'generated (gradients + noise)' if opts.synthetic else 'the corpus camera photos scaled to 12 MP'}")
        text = table(rows, proc_fig, note)
        print(text)
        if not opts.no_doc:
            write_doc(text)
        print(cli(local.root, "jobs").stdout)
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(10)
        local.stop(10)
        if opts.keep:
            print(f"cluster folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
