"""Every node of the shared cluster serves Prometheus ``/metrics`` with the cluster's figures.

One upload goes through first (``pixelfox put --wait``) and one web page is fetched, so the
counters have something to show; then every node listed by ``pixelfox status`` is scraped
over HTTP and its families are checked by name and by value.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ClusterHandle

pytestmark = pytest.mark.e2e

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        # a labelled family without children yet has no samples; keep its name (counters end in _total)
        out.setdefault(fam.name + ("_total" if fam.type == "counter" else ""), [])
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def total(samples: Samples, name: str, required: bool = True, **labels: str) -> float:
    """Sum of ``name``'s samples matching ``labels``; asserts the family exists when ``required``."""
    assert not required or name in samples, f"{name} missing"
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def test_every_node_exports_its_figures(cluster: ClusterHandle, corpus: Path) -> None:
    res = cluster.pixelfox("put", "--json", "--wait", str(corpus / "photos" / "painting_rgb.png"))
    assert json.loads(res.stdout.splitlines()[0])["status"] == "ready", res.stdout + res.stderr
    with urllib.request.urlopen(f"{cluster.web_url}/login", timeout=10) as r:
        assert r.status == 200
    nodes = json.loads(cluster.pixelfox("status", "--json").stdout)["nodes"]
    by_role: dict[str, list[Samples]] = {}
    for n in nodes:
        assert n["metrics_url"].endswith("/metrics"), n
        s = scrape(n["metrics_url"])
        by_role.setdefault(n["role"], []).append(s)
        # the standard process metrics, on every node
        assert total(s, "process_resident_memory_bytes") > 10 * 2**20
        assert total(s, "process_cpu_seconds_total") > 0
        assert total(s, "process_open_fds") > 0
    assert set(by_role) == {"manager", "upload", "proc", "storage", "web"}

    (m,) = by_role["manager"]
    assert total(m, "grpc_server_handled_total", grpc_method="Heartbeat", grpc_code="OK") > 0
    assert total(m, "grpc_server_handling_seconds_count", grpc_method="CreateUpload") >= 1
    assert total(m, "pixelfox_manager_dependency_up", dependency="redis") == 1
    assert total(m, "pixelfox_manager_dependency_up", dependency="database") == 1
    assert total(m, "pixelfox_queue_depth", queue="process") >= 0
    assert total(m, "pixelfox_cluster_nodes", role="storage", status="active") == 2
    assert total(m, "pixelfox_cluster_nodes", role="upload", status="active") == 2

    ups = by_role["upload"]
    size = (corpus / "photos" / "painting_rgb.png").stat().st_size
    assert sum(total(u, "pixelfox_upload_bytes_total") for u in ups) >= size
    assert sum(total(u, "pixelfox_uploads_total") for u in ups) >= 1
    for step in ("verify", "store", "complete"):  # each finished upload times its steps after the last byte
        assert sum(total(u, "pixelfox_upload_step_seconds_count", False, step=step) for u in ups) >= 1
        assert sum(total(u, "pixelfox_upload_step_seconds_sum", False, step=step) for u in ups) > 0
    # client side: every node heartbeats the manager through the metered channel
    assert all(total(u, "grpc_client_handled_total", grpc_method="Heartbeat", grpc_code="OK") > 0 for u in ups)

    procs = by_role["proc"]
    assert all("pixelfox_proc_step_duration_seconds" in p for p in procs)
    assert sum(total(p, "pixelfox_proc_step_duration_seconds_count", required=False) for p in procs) >= 1

    for st in by_role["storage"]:
        pools = {lab["pool"] for lab, _ in st["pixelfox_storage_used_bytes"]}
        assert pools, "no pool label"
        assert total(st, "pixelfox_storage_used_bytes") > 0
        assert total(st, "pixelfox_storage_free_bytes") > 0

    webs = by_role["web"]  # other tests may have added web instances to the shared cluster
    assert any(total(w, "pixelfox_session_store_operations_total", op="load") >= 1 for w in webs)
    assert all(total(w, "pixelfox_session_store_operations_total", result="error") == 0 for w in webs)
    assert any(total(w, "pixelfox_web_requests_total") >= 1 for w in webs)


def test_a_client_that_leaves_mid_upload_is_no_server_error(cluster: ClusterHandle) -> None:
    """A phone that loses its network mid-upload is counted as 499 (client closed request), not as
    a 500 that would trip the 5xx alerts."""
    import socket
    import time
    from urllib.parse import urlsplit

    nodes = json.loads(cluster.pixelfox("status", "--json").stdout)["nodes"]
    web = next(n for n in nodes if n["role"] == "web" and n["http_url"].rstrip("/") == cluster.web_url.rstrip("/"))

    def codes() -> dict[str, float]:
        s = scrape(web["metrics_url"])
        return {c: total(s, "pixelfox_web_requests_total", False, route="api_upload", code=c) for c in ("499", "500")}

    before = codes()
    u = urlsplit(cluster.web_url)
    for _ in range(2):
        with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
            sock.sendall(b"POST /api/v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                         b"Content-Length: 1000000\r\n\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; "
                         b"filename=\"a.jpg\"\r\n\r\n" + b"\xff\xd8" + b"\0" * 50_000)
            time.sleep(0.3)
    deadline = time.monotonic() + 10
    while (after := codes())["499"] < before["499"] + 2:
        assert time.monotonic() < deadline, (before, after)
        time.sleep(0.2)
    assert after["500"] == before["500"], (before, after)


def test_free_space_of_pools_on_one_disk_sums_once(cluster: ClusterHandle) -> None:
    """The session cluster's two storage nodes keep their pools under one folder, on one disk: each exports
    that disk's free bytes, labelled with the filesystem (``fs``), so ``sum(max by (fs) (...))`` counts it
    once, and the manager's ``pixelfox_cluster_storage_free_bytes`` is that figure. A plain ``sum`` of the
    per-pool figures, the only way to add them up before, is twice the disk's free space."""
    data = cluster.root / ".pixelfox" / "data"
    fs = f"{socket.gethostname()}:{os.stat(data).st_dev}"
    nodes = json.loads(cluster.pixelfox("status", "--json").stdout)["nodes"]
    stores = [scrape(n["metrics_url"]) for n in nodes if n["role"] == "storage"]
    assert len(stores) == 2
    for s in stores:
        assert [lab["fs"] for lab, _ in s["pixelfox_storage_free_bytes"]] == [fs], s["pixelfox_storage_free_bytes"]
        assert [lab["fs"] for lab, _ in s["pixelfox_storage_used_bytes"]] == [fs], s["pixelfox_storage_used_bytes"]
    by_fs: dict[str, float] = {}
    for s in stores:
        for lab, v in s["pixelfox_storage_free_bytes"]:
            by_fs[lab["fs"]] = max(by_fs.get(lab["fs"], 0.0), v)
    (m,) = (scrape(n["metrics_url"]) for n in nodes if n["role"] == "manager")
    cluster_free = total(m, "pixelfox_cluster_storage_free_bytes")
    disk = shutil.disk_usage(data).free  # other tests write meanwhile: within 5%, far from twice
    assert abs(sum(by_fs.values()) - disk) < disk * 0.05, (by_fs, disk)
    assert abs(cluster_free - disk) < disk * 0.05, (cluster_free, disk)
