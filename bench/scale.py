"""Scale-out benchmark (issue 6): the same upload-and-process workload on 1, 2 and 4 processing
nodes and 1 and 2 upload nodes.

Run: ``.venv/bin/python bench/scale.py [--images 32] [--concurrency 8] [--runs 1x1,1x2,1x4,2x2,2x4]``
(each run is ``<upload nodes>x<proc nodes>``; every run also has 2 storage nodes, 1 manager
and no web node). Each run starts its own local cluster in a temp folder, uploads the same
``--images`` distinct JPEG photos (generated, 1024x768, ~0.2 MB each) with ``--concurrency``
uploads in flight over gRPC, waits until every image is ``ready`` (or failed), and prints one
JSON line with:

* ``upload_s`` / ``total_s``: wall time until every upload was acknowledged / every image ready;
* ``images_per_s`` (ready images over ``total_s``) and ``uploads_per_s``;
* ``ready``, ``failed``, ``lost`` (acknowledged but neither ready nor failed at the end);
* ``jobs_per_node`` (``pixelfox_proc_step_duration_seconds_count{step="process"}`` of each
  processing node) and ``uploads_per_node`` (``pixelfox_uploads_total{result="stored"}`` of
  each upload node), from the nodes' own ``/metrics``.

Processing nodes split the cores between them (``PIXELFOX_WORKERS`` = cores / nodes, at
least 1), as ``pixelfox up`` does. On a 2-core machine the point is not speed-up but that
throughput does not fall as nodes are added, nothing is lost, and the work is spread.
Benches are not run in CI; the figures of a run go in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixelfox.cli.launcher import Counts, LocalCluster
from pixelfox.client.uploader import upload_file
from pixelfox.grpcx.auth import api_key_metadata, node_metadata
from pixelfox.grpcx.client import channel
from pixelfox.v1 import common_pb2, manager_pb2, manager_pb2_grpc


def make_photos(folder: Path, n: int) -> list[Path]:
    """``n`` distinct 1024x768 JPEG "photos" (smooth gradients plus random blocks)."""
    out = []
    base = Image.linear_gradient("L").resize((1024, 768)).convert("RGB")
    for i in range(n):
        rnd = random.Random(i)
        im = base.copy()
        for _ in range(60):
            x, y = rnd.randrange(924), rnd.randrange(668)
            im.paste((rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)), (x, y, x + 100, y + 100))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=92)
        p = folder / f"photo{i:03d}.jpg"
        p.write_bytes(buf.getvalue())
        out.append(p)
    return out


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples.items()
               if n == name and all(dict(lab).get(k) == x for k, x in labels.items()))


async def run_once(root: Path, photos: list[Path], uploads: int, procs: int, concurrency: int) -> dict[str, object]:
    local = LocalCluster(root, Counts(upload=uploads, proc=procs, storage=2, web=0))
    try:
        local.start()
        await local.wait_ready(120)
        key = await local.ensure_admin()
        md = api_key_metadata(key)
        async with channel(local.manager_address) as ch:
            stub = manager_pb2_grpc.ManagerServiceStub(ch)
            sem = asyncio.Semaphore(concurrency)
            start = time.monotonic()

            async def one(p: Path) -> str:
                async with sem:
                    receipt = await upload_file(stub, md, p, timeout_s=300)
                    return receipt.image.slug

            slugs = await asyncio.gather(*(one(p) for p in photos))
            upload_s = time.monotonic() - start
            pending = set(slugs)
            ready = failed = 0
            deadline = time.monotonic() + 600
            while pending and time.monotonic() < deadline:
                for slug in list(pending):
                    img = await stub.GetImage(manager_pb2.GetImageRequest(slug=slug), metadata=md, timeout=10)
                    if img.status == common_pb2.IMAGE_STATUS_READY:
                        ready += 1
                        pending.discard(slug)
                    elif img.status == common_pb2.IMAGE_STATUS_FAILED:
                        failed += 1
                        pending.discard(slug)
                if pending:
                    await asyncio.sleep(0.2)
            total_s = time.monotonic() - start
            nodes = (await stub.ListNodes(manager_pb2.ListNodesRequest(), metadata=node_metadata(local.secret),
                                          timeout=10)).nodes
        jobs, ups = {}, {}
        for n in nodes:
            if n.role == common_pb2.NODE_ROLE_PROC:
                jobs[n.node_id] = int(metric(scrape(n.metrics_url), "pixelfox_proc_step_duration_seconds_count",
                                             step="process"))
            elif n.role == common_pb2.NODE_ROLE_UPLOAD:
                ups[n.node_id] = int(metric(scrape(n.metrics_url), "pixelfox_uploads_total", result="stored"))
        return {
            "run": f"{uploads}x{procs}", "upload_nodes": uploads, "proc_nodes": procs, "images": len(photos),
            "concurrency": concurrency, "upload_s": round(upload_s, 2), "total_s": round(total_s, 2),
            "uploads_per_s": round(len(photos) / upload_s, 2), "images_per_s": round(ready / total_s, 2),
            "ready": ready, "failed": failed, "lost": len(pending),
            "jobs_per_node": dict(sorted(jobs.items())), "uploads_per_node": dict(sorted(ups.items())),
        }
    finally:
        local.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--runs", default="1x1,1x2,1x4,2x2,2x4", help="comma-separated <upload>x<proc> node counts")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pixelfox-scale-") as tmp:
        photos = make_photos(Path(tmp), opts.images)
        print(json.dumps({"photos": len(photos), "bytes": sum(p.stat().st_size for p in photos)}), flush=True)
        for i, spec in enumerate(opts.runs.split(",")):
            uploads, procs = (int(x) for x in spec.split("x"))
            root = Path(tmp) / f"run{i}"
            root.mkdir()
            print(json.dumps(asyncio.run(run_once(root, photos, uploads, procs, opts.concurrency))), flush=True)


if __name__ == "__main__":
    main()
